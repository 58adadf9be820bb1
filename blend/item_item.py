"""Closed-form scorers as blend features: EASE on the fold's watch histories, item-item
(`ItemItem`) and learner-learner (`LearnerLearner`, EASE with learners as the items).

    ease = ItemItem(l2=500.0, rank=256).fit(seen)          # seen: (n_learners, n_courses) CSR
    s = ease.score_pairs(seen, learner_idx, course_idx)    # (m,) one score per candidate pair
    peers = LearnerLearner(l2=300.0, rank=256).fit(seen)   # the same calls

Why a third scorer: the two-tower and EASE make different errors. On MovieLens-100K EASE alone
is a little below the two-tower, yet a blender that sees both ranks better than either (see
benchmarks/README.md). It is fitted at every cutoff on that cutoff's inputs only (what the
learners had watched), so it has no label of the window it scores.

Memory grows linearly in courses: the Gram matrix is its diagonal plus its top-`rank` part
(`baselines.ease_low_rank`), two (n_courses, rank) float32 factors; with rank >= the rank of
the watch matrix (e.g. min(learners, courses)) it is EASE exactly. Pair scores are gathers:
x_u @ left for the chunk's learners (a sparse product), then a row-wise dot with right's
columns; no (learners, courses) matrix is formed.

`LearnerLearner` is the other direction (user-based collaborative filtering in EASE's closed
form): fitted on the transposed matrix, a course scores for a learner by how much the learners
most like them watched it. Its memory grows linearly in learners instead (two (n_learners,
rank) float32 factors: 2 GiB at 1M learners and rank 256). On MovieLens-100K it lifted the
rank blend's test NDCG@10 while the 10% validation could not tell; it was chosen on a
development split (benchmarks/README.md, "More features for the rank blender").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from baselines.ease_low_rank import low_rank_ease
from watchlog.cowatch import binarize_watches

__all__ = ["ItemItem", "LearnerLearner"]

_BLOCK_BYTES = 64 << 20  # each of the two (block, rank) float32 gathers of a block of pairs


def _pair_indices(learner_idx, course_idx) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' (learner, course) indices as int64, checked: 1-d, one length."""
    learner_idx = np.asarray(learner_idx, dtype=np.int64)
    course_idx = np.asarray(course_idx, dtype=np.int64)
    if learner_idx.shape != course_idx.shape or learner_idx.ndim != 1:
        raise ValueError(
            f"score_pairs: learner_idx and course_idx must be 1-d of one length; got "
            f"{learner_idx.shape} and {course_idx.shape}"
        )
    return learner_idx, course_idx


class ItemItem(BaseEstimator):
    """EASE (L2 `l2`) with a rank-`rank` Gram matrix; see the module docstring."""

    def __init__(self, l2: float = 500.0, rank: int = 256, seed: int = 0):
        self.l2 = l2
        self.rank = rank
        self.seed = seed

    def fit(self, watch_matrix: sp.spmatrix) -> ItemItem:
        """watch_matrix: (n_learners, n_courses) sparse, > 0 = watched before the cutoff."""
        self.ease_ = low_rank_ease(watch_matrix, float(self.l2), int(self.rank), int(self.seed))
        self.n_courses_ = int(watch_matrix.shape[1])
        return self

    def score_pairs(
        self, watch_matrix: sp.spmatrix, learner_idx: np.ndarray, course_idx: np.ndarray
    ) -> np.ndarray:
        """(m,) float64 EASE score of each (learner row, course column) pair, from the
        learners' rows of `watch_matrix` (the same cutoff's histories). A learner without
        history (or a row of -1: unknown to the log) scores 0 on every course."""
        if not hasattr(self, "ease_"):
            raise RuntimeError("ItemItem is not fitted: call fit first")
        learner_idx, course_idx = _pair_indices(learner_idx, course_idx)
        if watch_matrix.shape[1] != self.n_courses_:
            raise ValueError(
                f"score_pairs: the watch matrix has {watch_matrix.shape[1]:,} courses, the "
                f"scorer was fitted on {self.n_courses_:,}"
            )
        out = np.zeros(len(learner_idx), dtype=np.float64)
        known = learner_idx >= 0
        if not known.any():
            return out
        rows, pos = np.unique(learner_idx[known], return_inverse=True)
        xb = binarize_watches(watch_matrix[rows]).astype(np.float32)  # (chunk, n_courses)
        a = np.asarray(xb @ self.ease_.left)  # (chunk, rank)
        right_t = self.ease_.right.T  # (n_courses, rank) view
        courses = course_idx[known]
        scores = np.empty(len(courses), dtype=np.float64)
        step = max(1, _BLOCK_BYTES // (4 * max(a.shape[1], 1)))  # pairs per block
        for lo in range(0, len(courses), step):
            sl = slice(lo, lo + step)
            scores[sl] = np.einsum("ij,ij->i", a[pos[sl]], right_t[courses[sl]])
        out[known] = scores
        return out


class LearnerLearner(ItemItem):
    """EASE (L2 `l2`, rank-`rank` Gram matrix) with learners as the items; see the module
    docstring. A learner without history in the fitted matrix scores 0 on every course (their
    column of the weights is 0), as does a learner outside it (-1)."""

    def fit(self, watch_matrix: sp.spmatrix) -> LearnerLearner:
        """watch_matrix: (n_learners, n_courses) sparse, > 0 = watched before the cutoff."""
        by_course = sp.csr_matrix(watch_matrix).T.tocsr()  # (n_courses, n_learners)
        super().fit(by_course)
        self.by_course_ = by_course
        return self

    def score_pairs(
        self, watch_matrix: sp.spmatrix, learner_idx: np.ndarray, course_idx: np.ndarray
    ) -> np.ndarray:
        """(m,) float64 score of each (learner row, course column) pair. `watch_matrix` must be
        the matrix it was fitted on (checked by shape and number of entries): a course's "history" is who
        watched it, which is fixed at fit."""
        if not hasattr(self, "by_course_"):
            raise RuntimeError("LearnerLearner is not fitted: call fit first")
        learner_idx, course_idx = _pair_indices(learner_idx, course_idx)
        fitted = self.by_course_.shape[::-1]  # (n_learners, n_courses)
        if tuple(watch_matrix.shape) != fitted or watch_matrix.nnz != self.by_course_.nnz:
            raise ValueError(
                f"score_pairs: the watch matrix ({watch_matrix.shape}, {watch_matrix.nnz:,} "
                f"entries) is not the one the scorer was fitted on ({fitted}, "
                f"{self.by_course_.nnz:,} entries)"
            )
        out = np.zeros(len(learner_idx), dtype=np.float64)
        known = learner_idx >= 0
        # rows of the transposed matrix are courses, its columns learners
        out[known] = super().score_pairs(self.by_course_, course_idx[known], learner_idx[known])
        return out
