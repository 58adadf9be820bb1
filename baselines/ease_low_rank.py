"""EASE whose memory grows linearly in courses: the Gram matrix as diagonal plus low rank.

Dense EASE (`baselines.ease`) inverts the n x n Gram matrix G = X^T X + l2 I: n^2 x 8 bytes,
0.8 GB at 10,000 courses and 80 GB at 100,000. Here G is replaced by

    G ~ A + V S^2 V^T        A = diag(a), a_j = G_jj - (V S^2 V^T)_jj + l2

with V S the top-r right singular vectors and values of X (a randomized SVD of the sparse
watch matrix, `sklearn.utils.extmath.randomized_svd`). The diagonal keeps G's exact
diagonal (each course's watcher count, what EASE's L2 is weighed against); the residual off
the diagonal is dropped. Its inverse comes from the Woodbury identity with an r x r solve:

    P = (A + V S^2 V^T)^-1 = A^-1 - W M W^T,   W = A^-1 V (n, r),   M = (S^-2 + V^T W)^-1 (r, r)

and EASE's weights B_ij = -P_ij / P_jj (i != j) = (W M W^T)_ij / P_jj, never formed: a
learner's scores x_u B are (x_u W) (M W^T diag(1 / P_jj)), two factors of n x r each, float32:
2 n r x 4 bytes (100 MB at 100,000 courses and rank 128). With r = n it is EASE exactly.

Scores on the learner's own courses (B's diagonal, zero in EASE) are not zero here; every
user of these scores removes the learner's own courses from the ranking anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.utils.extmath import randomized_svd

from watchlog.cowatch import binarize_watches

__all__ = ["LowRankEASE", "LowRankGram", "low_rank_ease", "low_rank_gram"]


@dataclass(frozen=True)
class LowRankEASE:
    """EASE weights B ~ left @ right, read row-wise by a learner's watched courses.

    left: (n_courses, r) float32, the rows summed over a learner's courses;
    right: (r, n_courses) float32. scores(x) = x @ left @ right.
    """

    left: np.ndarray
    right: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.left.nbytes + self.right.nbytes)

    def scores(self, watch_matrix: Any) -> np.ndarray:
        """(n_learners, n_courses) float32 scores of binary histories."""
        xb = binarize_watches(watch_matrix).astype(np.float32)
        return np.asarray(xb @ self.left) @ self.right


@dataclass(frozen=True)
class LowRankGram:
    """The part of low-rank EASE that does not depend on L2: X's top singular values `s` (r,)
    and right vectors `v` (n_courses, r), and G's exact diagonal `diag` (n_courses,), float64.
    `ease(l2)` finishes EASE for one L2 (an r x r solve), so a grid of L2s pays one SVD."""

    s: np.ndarray
    v: np.ndarray
    diag: np.ndarray

    def ease(self, l2: float) -> LowRankEASE:
        _check_l2(l2)
        s, v = self.s, self.v
        low_diag = np.einsum("jk,k,jk->j", v, s**2, v)  # (V S^2 V^T)_jj
        a = np.maximum(self.diag - low_diag, 0.0) + l2  # residual >= 0 up to rounding; + L2
        w = v / a[:, None]  # (n_courses, r) A^-1 V
        m = np.linalg.inv(np.diag(1.0 / s**2) + v.T @ w)  # (r, r)
        p_diag = 1.0 / a - np.einsum("jk,kl,jl->j", w, m, w)  # P_jj > 0 (P is positive definite)
        right = (m @ w.T) / p_diag[None, :]  # (r, n_courses)
        return LowRankEASE(w.astype(np.float32), right.astype(np.float32))


def low_rank_gram(watch_matrix: Any, rank: int = 256, seed: int = 0) -> LowRankGram:
    """X's top-`rank` singular values and vectors (randomized SVD) and G's diagonal.

    watch_matrix: (n_learners, n_courses) sparse; an entry > 0 is a watch. rank is capped at
    min(n_learners, n_courses); memory: a few (n_learners + n_courses) x rank float64 blocks,
    never n_courses^2.
    """
    if int(rank) < 1:
        raise ValueError(f"rank: must be a positive integer; got {rank!r}")
    xb = binarize_watches(watch_matrix).astype(np.float64).tocsr()  # (n_learners, n_courses)
    r = int(min(rank, *xb.shape))
    _, s, vt = randomized_svd(xb, r, n_iter=4, random_state=seed)  # vt: (r, n_courses)
    keep = s > s.max(initial=0.0) * 1e-7  # null directions out (rank-deficient X; empty: rank 0)
    gram_diag = np.asarray(xb.power(2).sum(axis=0)).ravel()  # G_jj: watchers per course
    return LowRankGram(s[keep], vt[keep].T, gram_diag)


def low_rank_ease(watch_matrix: Any, l2: float, rank: int = 256, seed: int = 0) -> LowRankEASE:
    """EASE (L2 `l2`) with the Gram matrix as its diagonal plus its top-`rank` part:
    `low_rank_gram(watch_matrix, rank, seed).ease(l2)`."""
    _check_l2(l2)  # before the SVD
    return low_rank_gram(watch_matrix, rank, seed).ease(l2)


def _check_l2(l2: float) -> None:
    if not (np.isfinite(l2) and l2 > 0):
        raise ValueError(f"l2: must be finite and > 0; got {l2!r}")
