"""What every baseline shares: the learner x course input and the rows a score call reads.

Every model binarizes its input (`watchlog.cowatch.binarize_watches`: an entry > 0 is a watch,
values must be finite and >= 0), the implicit-feedback setting of the published baselines.
`score(learner_idx, X_input=None)` returns a dense (len(learner_idx), n_courses) float32
numpy array of scores for the rows `learner_idx` of `X_input` (default: the fitted matrix),
the shape `evaluation.full_ranking_topk` expects from a score_fn. Already-watched courses are
not removed here: pass them as `exclude` to the ranking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from watchlog.cowatch import binarize_watches

__all__ = ["Baseline"]


def _few(values: np.ndarray, n: int = 5) -> str:
    head = ", ".join(str(v) for v in values[:n])
    return head + (", ..." if len(values) > n else "")


class Baseline(BaseEstimator):
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
