"""EASE item-item weights (Steck 2019) from a learner x course watch matrix, in closed form.

    B = argmin ||X - X B||^2 + l2 ||B||^2  subject to diag(B) = 0
      = -P_ij / P_jj off the diagonal, 0 on it, with P = (X^T X + l2 I)^-1

X is the binarized watch matrix (`binarize_watches`: an entry > 0 is a watch). A learner's
scores are x_u B: the sum of the rows of B of the courses they watched. The Gram matrix is
dense float64: n_courses^2 x 8 bytes (0.8 GB at 10,000 courses, about x 3 during the solve),
so this is for catalogues of up to some ten thousand courses. Used by the EASE baseline
(`baselines.EASE`) and as the two-tower's distillation teacher (`ncf.teacher`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from watchlog.cowatch import binarize_watches

__all__ = ["ease_weights"]


def ease_weights(watch_matrix: Any, l2: float) -> np.ndarray:
    """(n_courses, n_courses) float32 EASE weights with a zero diagonal; l2 finite and > 0."""
    if not (np.isfinite(l2) and l2 > 0):
        raise ValueError(f"l2: must be finite and > 0; got {l2!r}")
    xb = binarize_watches(watch_matrix).astype(np.float64)  # (n_learners, n_courses) 0/1
    gram = (xb.T @ xb).toarray()  # (n_courses, n_courses) co-watch counts
    gram[np.diag_indices_from(gram)] += l2
    # G + l2 I is symmetric positive definite: Cholesky, then P = G^-1 by solving G P = I.
    factor = scipy.linalg.cho_factor(gram, overwrite_a=True, check_finite=False)
    p = scipy.linalg.cho_solve(factor, np.eye(gram.shape[0]), overwrite_b=True)
    del factor, gram
    b = p / (-np.diag(p))[None, :]  # B_ij = -P_ij / P_jj
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)
