"""EASE (Steck 2019) as a baseline: dense closed form while it fits in memory, low rank beyond.

    B = argmin ||X - X B||^2 + l2 ||B||^2 subject to diag(B) = 0;   score = x_u B

Dense (`baselines.ease.ease_weights`): P = (X^T X + l2 I)^-1, B_ij = -P_ij / P_jj, B_jj = 0.
Its fit holds about 3.2 x n_courses^2 x 8 bytes at its peak (the float64 Gram matrix, its
inverse, B; 7.9 GB and 9 minutes measured at 17,632 courses), so it is for catalogues up to
some ten thousand courses. Low rank (`baselines.ease_low_rank`): the Gram matrix as its
diagonal plus rank r, memory 2 x n_courses x r x 4 bytes; with r = n_courses it is EASE.

The choice: `rank=None` (the default) fits the dense form when its estimated peak is at most
`max_dense_gib`, else it switches to the low-rank form at `fallback_rank` and logs a warning
saying so and how to choose (`rank=` for the low-rank form, a larger `max_dense_gib` for the
dense one). `rank=<int>` always fits the low-rank form. The fitted `rank_` says which was
used (None: dense), so a table of results can name it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from baselines.base import Baseline
from baselines.ease import ease_weights
from baselines.ease_low_rank import LowRankEASE, low_rank_ease

__all__ = ["EASE", "dense_ease_peak_gib"]

_log = logging.getLogger(__name__)

# Peak memory of the dense fit in units of one n_courses^2 float64 matrix (measured: 7.9 GB
# at 17,632 courses, i.e. 3.2 x 17,632^2 x 8 bytes).
DENSE_PEAK_MATRICES = 3.2


def dense_ease_peak_gib(n_courses: int) -> float:
    """Estimated peak memory (GiB) of the dense EASE fit on `n_courses` courses."""
    return DENSE_PEAK_MATRICES * float(n_courses) ** 2 * 8 / 2**30


class EASE(Baseline):
    """EASE^R (Steck 2019), dense or low rank (see module doc).

    l2: > 0. rank: None (dense while it fits `max_dense_gib`, else low rank at
    `fallback_rank`, with a warning) or a positive int (always low rank, that rank).
    max_dense_gib: the largest estimated peak (GiB) the dense fit may take; None: no limit.
    fallback_rank: the rank used when the dense form is too large. seed: the randomized
    SVD's (low rank only).
    After fit: rank_ (None: dense; else the rank asked for, capped at min(X.shape) by the SVD);
    B_ float32 (n_courses, n_courses) with a zero diagonal (dense) or factors_ (`LowRankEASE`).
    """

    def __init__(
        self,
        l2: float = 500.0,
        rank: int | None = None,
        max_dense_gib: float | None = 4.0,
        fallback_rank: int = 256,
        seed: int = 0,
    ):
        self.l2 = l2
        self.rank = rank
        self.max_dense_gib = max_dense_gib
        self.fallback_rank = fallback_rank
        self.seed = seed

    def fit(self, X: Any, y: Any = None) -> EASE:
        if self.rank is not None and (isinstance(self.rank, bool) or int(self.rank) < 1):
            raise ValueError(f"rank: must be None (dense) or a positive int; got {self.rank!r}")
        if self.max_dense_gib is not None and not self.max_dense_gib > 0:
            raise ValueError(
                f"max_dense_gib: must be > 0 or None (no limit); got {self.max_dense_gib!r}"
            )
        xb = self._fit_input(X)
        self.rank_ = self._rank(xb.shape[1])
        self.B_ = self.factors_ = None
        if self.rank_ is None:
            self.B_ = ease_weights(xb, self.l2)  # (n_courses, n_courses) float32
        else:
            self.factors_: LowRankEASE = low_rank_ease(xb, self.l2, self.rank_, seed=self.seed)
        return self

    def _rank(self, n_courses: int) -> int | None:
        if self.rank is not None:
            return int(self.rank)
        peak = dense_ease_peak_gib(n_courses)
        if self.max_dense_gib is None or peak <= self.max_dense_gib:
            return None
        _log.warning(
            "EASE: the dense form on %s courses would take about %.1f GiB (> max_dense_gib=%s); "
            "fitting the low-rank form at rank %d instead. Set rank=<int> to choose the rank, "
            "or max_dense_gib=%.0f (or null) for the dense form.",
            f"{n_courses:,}", peak, self.max_dense_gib, int(self.fallback_rank), np.ceil(peak),
        )  # fmt: skip
        return int(self.fallback_rank)

    @property
    def form(self) -> str:
        """'dense' or 'low-rank <r>' (after fit)."""
        if not hasattr(self, "rank_"):
            raise RuntimeError("EASE is not fitted: call fit(X) first")
        return "dense" if self.rank_ is None else f"low-rank {self.rank_}"

    def score(self, learner_idx: Any, X_input: Any = None) -> np.ndarray:
        rows = self._rows(learner_idx, X_input)  # (c, n_courses) binary
        if self.B_ is not None:
            return np.asarray(rows @ self.B_, dtype=np.float32)  # (c, n_courses) dense
        f = self.factors_
        return np.asarray(rows @ f.left, dtype=np.float32) @ f.right  # (c, r) @ (r, n_courses)
