"""Popularity: the number of distinct learners who watched each course, the same list for
everyone (input handling and `score` in `baselines.base`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from baselines.base import Baseline

__all__ = ["Popularity"]


class Popularity(Baseline):
    """Score = number of distinct learners who watched the course.

    After fit: counts_ float32 (n_courses,)."""

    def fit(self, X: Any, y: Any = None) -> Popularity:
        xb = self._fit_input(X)
        self.counts_ = np.asarray(xb.sum(axis=0), dtype=np.float32).ravel()  # (n_courses,)
        return self

    def score(self, learner_idx: Any, X_input: Any = None) -> np.ndarray:
        rows = self._rows(learner_idx, X_input)
        return np.repeat(self.counts_[None, :], rows.shape[0], axis=0)  # (len, n_courses)
