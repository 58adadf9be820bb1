"""Comparing two runs of the same fit: bit for bit on the CPU, to a tolerance on CUDA.

CUDA kernels may sum in another order from one run to the next (atomics in scatter-adds and
sparse products), so two identical GPU fits agree to the last few bits, not to all of them
(DEVELOPERS.md). The tolerances stay far below what a different fit (another seed, another
state, another number of epochs) moves, so the tests still fail when the fit is not the same.
"""

from __future__ import annotations

import numpy as np
import torch

ON_CUDA = torch.cuda.is_available()  # estimators with device "auto" fit there


def assert_same_run(actual, desired, *, cuda_rtol: float = 1e-10, err_msg: str = "") -> None:
    """Equal arrays on the CPU; on CUDA equal to `cuda_rtol` (relative, with an absolute floor
    at the same size times the largest magnitude, for entries near zero)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    if not ON_CUDA:
        np.testing.assert_array_equal(actual, desired, err_msg=err_msg)
        return
    scale = float(np.abs(desired).max()) if desired.size else 0.0
    np.testing.assert_allclose(
        actual, desired, rtol=cuda_rtol, atol=cuda_rtol * scale, err_msg=err_msg
    )
