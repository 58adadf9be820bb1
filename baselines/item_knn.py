"""Item-based kNN (Sarwar et al. 2001) on co-watch similarity.

S = course x course `watchlog.cowatch_similarity(X, measure)` keeping each course's k most
similar courses, and score(u, j) = sum over the courses i in u's history of S[j, i], i.e. the
similarities of j to those of its k neighbours that u watched. `shrink` (cosine only, as in
Dacrema et al. 2019's ItemKNNCF) divides by sqrt(n_i n_j) + shrink instead of sqrt(n_i n_j),
damping pairs of rarely watched courses; the k neighbours are chosen after shrinking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from baselines.base import Baseline
from watchlog.cowatch import MEASURES, CoWatchSimilarity

__all__ = ["ItemKNN"]


class ItemKNN(Baseline):
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
