"""ncf.retrieval against a brute-force numpy reference: top-K by dot product and by cosine."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ncf.retrieval import similar_by_cosine, top_k_by_dot


def brute_force(q, items, N, allowed):
    """Per row: sort the allowed items by score (desc), pad with -1 / -inf."""
    s = q.astype(np.float64) @ items.astype(np.float64).T  # (n, m)
    idx = np.full((len(q), N), -1)
    val = np.full((len(q), N), -np.inf)
    for i in range(len(q)):
        cols = np.flatnonzero(allowed[i])
        order = cols[np.argsort(-s[i, cols], kind="stable")][:N]
        idx[i, : order.size], val[i, : order.size] = order, s[i, order]
    return idx, val


def random_csr(n, m, density, seed):
    return sp.random(n, m, density=density, random_state=seed, format="csr", dtype=np.float32)


@pytest.fixture
def emb():
    rng = np.random.default_rng(0)
    # continuous scores: no ties, so the order is unique and comparable
    return rng.normal(size=(37, 8)).astype(np.float32), rng.normal(size=(23, 8)).astype(np.float32)


def assert_same(got, want):
    idx, scores = got
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(idx, want[0])
    np.testing.assert_allclose(scores, want[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 5, 4096])
def test_plain_and_exclude_match_brute_force(emb, chunk_size):
    q, items = emb
    ex = random_csr(37, 23, 0.3, seed=1)
    allowed = ex.toarray() == 0
    got = top_k_by_dot(q, items, 7, exclude=ex, chunk_size=chunk_size, device="cpu")
    assert_same(got, brute_force(q, items, 7, allowed))
    got = top_k_by_dot(q, items, 7, chunk_size=chunk_size)
    assert_same(got, brute_force(q, items, 7, np.ones((37, 23), bool)))


def test_torch_inputs_and_float64_give_the_same(emb):
    q, items = emb
    a = top_k_by_dot(q, items, 5)
    b = top_k_by_dot(torch.from_numpy(q).double(), torch.from_numpy(items), 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)


def test_global_candidates_map_back_to_global_indices(emb):
    q, items = emb
    cand = np.array([20, 3, 3, 7, 11, 0, 15])  # unsorted, with a duplicate
    ex = random_csr(37, 23, 0.3, seed=2)
    allowed = np.zeros((37, 23), bool)
    allowed[:, np.unique(cand)] = True
    allowed &= ex.toarray() == 0
    got = top_k_by_dot(q, items, 4, exclude=ex, candidates=cand, chunk_size=6)
    assert_same(got, brute_force(q, items, 4, allowed))
    assert set(got[0][got[0] >= 0].ravel()) <= set(cand.tolist())


def test_per_row_candidates_with_exclude(emb):
    q, items = emb
    cand = random_csr(37, 23, 0.4, seed=3)
    cand.data[:3] = 0.0  # explicit zeros still count as allowed (structural)
    ex = random_csr(37, 23, 0.3, seed=4)
    allowed = np.zeros((37, 23), bool)
    coo = cand.tocoo()
    allowed[coo.row, coo.col] = True
    allowed &= ex.toarray() == 0
    got = top_k_by_dot(q, items, 6, exclude=ex, candidates=cand, chunk_size=8)
    assert_same(got, brute_force(q, items, 6, allowed))


def test_padding_when_fewer_than_n_items(emb):
    q, items = emb
    idx, scores = top_k_by_dot(q[:3], items, 30)  # m = 23 < N
    assert idx.shape == (3, 30)
    assert (idx[:, 23:] == -1).all() and np.isneginf(scores[:, 23:]).all()
    assert (idx[:, :23] >= 0).all() and np.isfinite(scores[:, :23]).all()
    # a learner who has watched everything gets a list of padding only
    ex = sp.csr_array(np.ones((3, 23), np.float32))
    idx, scores = top_k_by_dot(q[:3], items, 5, exclude=ex)
    assert (idx == -1).all() and np.isneginf(scores).all()
    idx, scores = top_k_by_dot(q[:3], items, 5, candidates=np.array([], dtype=np.int64))
    assert (idx == -1).all() and np.isneginf(scores).all()


def test_no_queries(emb):
    _, items = emb
    idx, scores = top_k_by_dot(np.zeros((0, 8), np.float32), items, 5)
    assert idx.shape == (0, 5) and scores.shape == (0, 5) and scores.dtype == np.float32


def test_bad_input_messages(emb):
    q, items = emb
    with pytest.raises(ValueError, match=r"queries: expected shape \(n, d=8\)"):
        top_k_by_dot(q[:, :5], items, 3)
    with pytest.raises(ValueError, match=r"items: expected a 2-D array of shape \(m, d\)"):
        top_k_by_dot(q, items[0], 3)
    with pytest.raises(
        ValueError, match=r"exclude: expected shape \(n_queries, n_items\) = \(37, 23\)"
    ):
        top_k_by_dot(q, items, 3, exclude=random_csr(36, 23, 0.1, 0))
    with pytest.raises(ValueError, match=r"candidates: expected shape"):
        top_k_by_dot(q, items, 3, candidates=random_csr(37, 22, 0.1, 0))
    with pytest.raises(
        ValueError, match=r"candidates: item indices must be in \[0, 23\); 1 are not \(e.g. 23\)"
    ):
        top_k_by_dot(q, items, 3, candidates=[0, 23])
    with pytest.raises(ValueError, match="N: must be a positive int"):
        top_k_by_dot(q, items, 0)
    bad = q.copy()
    bad[[2, 9], 1] = np.nan
    with pytest.raises(
        ValueError, match=r"queries: must be finite; 2 row\(s\) hold NaN/inf \(e.g. rows 2, 9\)"
    ):
        top_k_by_dot(bad, items, 3)
    with pytest.raises(TypeError, match="queries: expected floating-point"):
        top_k_by_dot(q.astype(np.int64), items, 3)
    inf_and_minus_inf = q.copy()  # +inf and -inf in one array sum to NaN: still caught
    inf_and_minus_inf[4, 0], inf_and_minus_inf[7, 2] = np.inf, -np.inf
    with pytest.raises(ValueError, match=r"2 row\(s\) hold NaN/inf \(e.g. rows 4, 7\)"):
        top_k_by_dot(inf_and_minus_inf, items, 3)


def test_finite_entries_whose_sum_overflows_are_accepted(emb):
    """The finiteness check sums the array first (a finite sum: nothing to report); a sum
    that overflows on finite entries falls back to the entry-wise check and passes."""
    q, items = emb
    huge = q.copy()
    huge[:, 0] = 3e38  # finite, but 37 of them sum past float32's max
    idx, scores = top_k_by_dot(huge, items, 3)
    assert idx.shape == (37, 3) and (idx >= 0).all()


def test_similar_by_cosine_excludes_itself_and_matches_brute_force(emb):
    _, items = emb
    items = items.copy()
    items[5] = 3.0 * items[4]  # same direction: cosine 1, must come first for item 4
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    query = np.array([4, 0, 4, 22])
    allowed = np.ones((4, 23), bool)
    allowed[np.arange(4), query] = False
    idx, cos = similar_by_cosine(items, query, 6, chunk_size=3)
    assert_same((idx, cos), brute_force(unit[query], unit, 6, allowed))
    assert idx[0, 0] == 5 and cos[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert not (idx == query[:, None]).any()
    # every other item, then padding
    idx, _ = similar_by_cosine(items, [1], 30)
    assert (idx[0, :22] >= 0).all() and (idx[0, 22:] == -1).all() and 1 not in idx[0]
    with pytest.raises(ValueError, match=r"item_idx: item indices must be in \[0, 23\)"):
        similar_by_cosine(items, [23], 3)


def test_similar_by_cosine_zero_vector_has_cosine_zero(emb):
    _, items = emb
    items = items.copy()
    items[7] = 0.0
    idx, cos = similar_by_cosine(items, [7], 22)
    np.testing.assert_array_equal(cos, 0.0)
