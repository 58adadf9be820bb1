"""watchlog.design's row-block hstack of GLMix's designs: scipy's hstack, array for array."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from watchlog.design import _hstack


def _blocks(rng, n, widths, wide=False):
    out = []
    for j, p in enumerate(widths):
        m = sp.random(n, p, density=0.3, format="csr", dtype=np.float32, random_state=rng)
        if j == 1:  # a run of empty rows
            m = sp.csr_matrix(sp.diags((np.arange(n) >= n // 3).astype(np.float32)) @ m)
            m.eliminate_zeros()
        if wide and j == 0:  # int64 index arrays (scipy's result is int32 all the same)
            m.indices, m.indptr = m.indices.astype(np.int64), m.indptr.astype(np.int64)
        out.append(m)
    return out


@pytest.mark.parametrize(("n", "rows", "wide"), [(1000, 64, False), (1000, 1 << 16, False),
                                                 (997, 100, True), (0, 64, False)])  # fmt: skip
def test_hstack_by_row_blocks_equals_scipys(n, rows, wide):
    mats = _blocks(np.random.default_rng(n), n, (1, 7, 40, 3), wide)
    want = sp.hstack(mats, format="csr")
    got = _hstack(mats, n, rows)
    assert got.shape == want.shape and got.dtype == want.dtype
    for a in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(got, a), getattr(want, a))
        assert getattr(got, a).dtype == getattr(want, a).dtype, a
