"""Baselines for the two-tower, scikit-learn style, on a learner x course CSR matrix.

    model = EASE(l2=500.0).fit(X_train)                       # (n_learners, n_courses) CSR
    topk = full_ranking_topk(model.score, 10, users=users, exclude=X_train)
    # temporal splits: score from the pre-cutoff history instead of the fitted matrix
    topk = full_ranking_topk(partial(model.score, X_input=X_history), 10, users=users, ...)

Every model binarizes its input (`watchlog.cowatch.binarize_watches`: an entry > 0 is a watch,
values must be finite and >= 0), the implicit-feedback setting of the published baselines.
`score(learner_idx, X_input=None)` returns a dense (len(learner_idx), n_courses) float32
numpy array of scores for the rows `learner_idx` of `X_input` (default: the fitted matrix),
the shape `evaluation.full_ranking_topk` expects from a score_fn. Already-watched courses are
not removed here: pass them as `exclude` to the ranking.

- Popularity: number of distinct learners who watched each course (the same for everyone).
- ItemKNN: item-based kNN (Sarwar et al. 2001) on co-watch similarity: S = course x course
  `watchlog.cowatch_similarity(X, measure)` keeping each course's k most similar courses, and
  score(u, j) = sum over the courses i in u's history of S[j, i], i.e. the similarities of j
  to those of its k neighbours that u watched. `shrink` (cosine only, as in Dacrema et al.
  2019's ItemKNNCF) divides by sqrt(n_i n_j) + shrink instead of sqrt(n_i n_j), damping
  pairs of rarely watched courses; the k neighbours are chosen after shrinking.
- EASE (Steck 2019): B = argmin ||X - X B||^2 + l2 ||B||^2 subject to diag(B) = 0, in closed
  form (`baselines.ease.ease_weights`): P = (X^T X + l2 I)^-1, B_ij = -P_ij / P_jj, B_jj = 0;
  score = x_u B. The Gram matrix is dense float64 (0.8 GB at 10,000 courses, x 3 in the solve).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from baselines.ease import ease_weights
from watchlog.cowatch import MEASURES, CoWatchSimilarity, binarize_watches

__all__ = ["Popularity", "ItemKNN", "EASE"]


def _few(values: np.ndarray, n: int = 5) -> str:
    head = ", ".join(str(v) for v in values[:n])
    return head + (", ..." if len(values) > n else "")


class _Baseline(BaseEstimator):
    """Shared input handling: fitted binary X_ (CSR float32) and score() row selection."""

    def _fit_input(self, X: Any) -> sp.csr_matrix:
        if not sp.issparse(X):
            raise TypeError(
                f"X: must be a scipy sparse learner x course matrix (CSR); got {type(X).__name__}"
            )
        xb = binarize_watches(X).astype(np.float32)  # (n_learners, n_courses) 0/1
        self.X_ = xb
        self.n_learners_, self.n_courses_ = xb.shape
        return xb

    def _rows(self, learner_idx: Any, X_input: Any) -> sp.csr_matrix:
        """Binary (len(learner_idx), n_courses) CSR rows to score."""
        if not hasattr(self, "X_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X) first")
        idx = np.asarray(learner_idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(
                f"learner_idx: must be a 1-D array of integer row indices; got shape "
                f"{idx.shape}, dtype {idx.dtype}"
            )
        if X_input is None:
            src, name = self.X_, "X (fitted)"
        else:
            if not sp.issparse(X_input):
                raise TypeError(
                    f"X_input: must be a scipy sparse matrix; got {type(X_input).__name__}"
                )
            if X_input.shape[1] != self.n_courses_:
                raise ValueError(
                    f"X_input: expected {self.n_courses_:,} columns (n_courses at fit); "
                    f"got shape {X_input.shape}"
                )
            src, name = sp.csr_matrix(X_input), "X_input"
        bad = idx[(idx < 0) | (idx >= src.shape[0])]
        if bad.size:
            raise ValueError(
                f"learner_idx: rows must be in [0, {src.shape[0]:,}) of {name}; "
                f"{bad.size:,} are not (e.g. {_few(bad)})"
            )
        rows = src[idx]
        return rows if X_input is None else binarize_watches(rows).astype(np.float32)


class Popularity(_Baseline):
    """Score = number of distinct learners who watched the course (see module doc)."""

    def fit(self, X: Any, y: Any = None) -> Popularity:
        xb = self._fit_input(X)
        self.counts_ = np.asarray(xb.sum(axis=0), dtype=np.float32).ravel()  # (n_courses,)
        return self

    def score(self, learner_idx: Any, X_input: Any = None) -> np.ndarray:
        rows = self._rows(learner_idx, X_input)
        return np.repeat(self.counts_[None, :], rows.shape[0], axis=0)  # (len, n_courses)


class ItemKNN(_Baseline):
    """Item-based kNN on co-watch similarity (see module doc).

    k: neighbours kept per course. measure: "cosine", "jaccard" or "pmi" (as in
    watchlog.cowatch). shrink: >= 0, cosine only. block_size: course rows per block of the
    similarity computation (memory only).
    After fit: similarity_ CSR float32 (n_courses, n_courses), row j = j's k neighbours.
    """

    def __init__(
        self, k: int = 100, measure: str = "cosine", shrink: float = 0.0, block_size: int = 256
    ):
        self.k = k
        self.measure = measure
        self.shrink = shrink
        self.block_size = block_size

    def fit(self, X: Any, y: Any = None) -> ItemKNN:
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ValueError(f"k: must be a positive int; got {self.k!r}")
        if self.measure not in MEASURES:
            raise ValueError(f"measure: must be one of {MEASURES}; got {self.measure!r}")
        if not (np.isfinite(self.shrink) and self.shrink >= 0):
            raise ValueError(f"shrink: must be finite and >= 0; got {self.shrink!r}")
        if self.shrink and self.measure != "cosine":
            raise ValueError(f"shrink: only defined for measure='cosine'; got {self.measure!r}")
        xb = self._fit_input(X)
        # With shrinkage the neighbours must be chosen after shrinking: keep every pair first.
        est = CoWatchSimilarity(
            self.measure, top_k=None if self.shrink else int(self.k), block_size=self.block_size
        ).fit(xb)
        sim = sp.csr_matrix(est.similarity_)
        if self.shrink:
            sim = _top_k_rows(_shrunk(sim, est.course_watchers_, self.shrink), int(self.k))
        self.similarity_ = sim  # (n_courses, n_courses), row j = j's neighbours
        self._sim_t = sim.T.tocsr()  # (n_courses, n_courses): x_u @ S^T
        return self

    def score(self, learner_idx: Any, X_input: Any = None) -> np.ndarray:
        rows = self._rows(learner_idx, X_input)  # (c, n_courses) binary
        return (rows @ self._sim_t).toarray().astype(np.float32, copy=False)  # (c, n_courses)


def _shrunk(sim: sp.csr_matrix, watchers: np.ndarray, shrink: float) -> sp.csr_matrix:
    """cos_ij * d / (d + shrink), d = sqrt(n_i n_j): i.e. C_ij / (sqrt(n_i n_j) + shrink)."""
    rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
    d = np.sqrt(watchers[rows].astype(np.float64) * watchers[sim.indices])
    out = sim.copy()
    out.data = (sim.data.astype(np.float64) * (d / (d + shrink))).astype(np.float32)
    return out


def _top_k_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest stored values per row (ties to the lower column, as co-watch does)."""
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((m.indices, -m.data, rows))  # rows stay grouped, best first in each
    start = m.indptr[:-1][rows[order]]  # first position of each entry's row
    keep = order[np.arange(order.size) - start < k]
    out = sp.csr_matrix(
        (m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape, dtype=np.float32
    )
    out.sort_indices()
    return out


class EASE(_Baseline):
    """EASE^R (Steck 2019), closed form in float64 (see module doc). l2 > 0.

    After fit: B_ float32 (n_courses, n_courses) with a zero diagonal.
    """

    def __init__(self, l2: float = 500.0):
        self.l2 = l2

    def fit(self, X: Any, y: Any = None) -> EASE:
        self.B_ = ease_weights(self._fit_input(X), self.l2)  # (n_courses, n_courses) float32
        return self

    def score(self, learner_idx: Any, X_input: Any = None) -> np.ndarray:
        rows = self._rows(learner_idx, X_input)  # (c, n_courses) binary
        return np.asarray(rows @ self.B_, dtype=np.float32)  # (c, n_courses) dense
