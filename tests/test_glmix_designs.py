"""watchlog.design's GLMix designs built by row chunks and row blocks: scipy's own
stacking of the same terms, array for array."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from watchlog.design import _hstack, design_matrices, face_split
from watchlog.features import FeatureBlock


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


def _entity_block(rng, n, side, canonical):
    """A FeatureBlock of n entities: a one-hot group, a multi-hot group (empty rows), a
    numeric column with explicit zeros; duplicates (not canonical) when asked."""
    one = sp.csr_matrix((np.ones(n, np.float32), rng.integers(0, 4, n), np.arange(n + 1)),
                        shape=(n, 4))  # fmt: skip
    multi = sp.random(n, 6, density=0.3, format="csr", dtype=np.float32, random_state=rng)
    num = sp.csr_matrix((rng.choice([0.0, 1.5, -2.0], n).astype(np.float32), np.zeros(n, int),
                         np.arange(n + 1)), shape=(n, 1))  # fmt: skip  # stored zeros kept
    m = sp.hstack([one, multi, num], format="csr")
    if not canonical:  # every row's first entry again, at the row's end: a duplicate
        rows = [sp.csr_matrix((r.data.tolist() + r.data[:1].tolist(),
                               r.indices.tolist() + r.indices[:1].tolist(), [0, r.nnz + 1]),
                              shape=(1, 11), dtype=np.float32) for r in m]  # fmt: skip
        m = sp.vstack(rows, format="csr")
        assert not m.has_canonical_format
    names = tuple(f"{side}{j}" for j in range(11))
    return FeatureBlock(m, names, {"kind": (0, 4), "tags": (4, 10), "size": (10, 11)})


@pytest.mark.parametrize("canonical", [True, False])
def test_designs_by_row_chunks_equal_scipys_stack_of_the_whole(canonical):
    """design_matrices allocates each design from entity-level entry counts and fills it chunk
    by chunk: for every chunk size, the arrays of scipy's stack of the whole terms, with
    crosses across and within tables, duplicates, stored zeros and empty rows."""
    rng = np.random.default_rng(7)
    lb, cb = _entity_block(rng, 50, "l", canonical), _entity_block(rng, 30, "c", canonical)
    n = 1003
    li, ci = rng.integers(0, 50, n), rng.integers(0, 30, n)
    crosses = [("learner.tags", "course.kind"), ("course.kind", "course.size")]
    coords = {"per_learner": ("course",), "per_course": ("learner.kind", "learner.size")}
    L, C = lb.matrix[li], cb.matrix[ci]  # scipy's gathers of the whole

    def group(m, block, g):
        lo, hi = block.groups[g]
        return m[:, lo:hi]

    within = face_split(cb.select("kind").matrix, cb.select("size").matrix)[0][ci]
    want = {
        "global": [L, C, face_split(group(L, lb, "tags"), group(C, cb, "kind"))[0], within],
        "per_learner": [C],
        "per_course": [group(L, lb, "kind"), group(L, lb, "size")],
    }
    want = {k: sp.hstack([sp.csr_matrix(np.ones((n, 1), np.float32)), *v], format="csr")
            for k, v in want.items()}  # fmt: skip
    for chunk_rows in (7, 256, 10**6):
        got = design_matrices(li, ci, lb, cb, crosses=crosses, coordinates=coords,
                              chunk_rows=chunk_rows)  # fmt: skip
        for k, w in want.items():
            m = got[k].matrix
            assert m.shape == w.shape and m.dtype == np.float32, (k, chunk_rows)
            for a in ("indptr", "indices", "data"):
                np.testing.assert_array_equal(getattr(m, a), getattr(w, a), err_msg=f"{k} {a}")
            assert m.indices.dtype == m.indptr.dtype == np.int32
        assert got["global"].groups["course.kind*course.size"][1] == got["global"].shape[1]
    empty = design_matrices(li[:0], ci[:0], lb, cb, crosses=crosses, coordinates=coords)
    assert {k: b.shape for k, b in empty.items()} == {k: (0, w.shape[1]) for k, w in want.items()}
    with pytest.raises(ValueError, match="chunk_rows"):
        design_matrices(li, ci, lb, cb, chunk_rows=0)
