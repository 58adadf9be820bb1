"""Ties go to the lower item index on every top-k path (CPU and CUDA): the threshold select,
torch.topk (float64, CUDA, k above a quarter of the items, per-row candidates) and faiss's
search (over `ncf.retrieval.MAX_ITEMS` items). A list is the first k of the allowed items
sorted by (descending score, ascending index), -0.0 equal to +0.0.

Integer embeddings keep every product exact in float32 whatever the summation order, so
the reference below is exact and the ties are many."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from evaluation.full_ranking import full_ranking_topk, out_of_order_rows, ties_to_lower_index
from evaluation.threshold_select import dot_top_k
from ncf.retrieval import MAX_ITEMS, top_k_by_dot

CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
)


def reference(scores: np.ndarray, k: int, allowed: np.ndarray | None = None):
    """(idx, scores) (n, k): allowed entries by (descending score, ascending index), padded
    with -1 / -inf; -inf scores are never returned."""
    s = scores.astype(np.float64)
    if allowed is not None:
        s = np.where(allowed, s, -np.inf)
    n, m = s.shape
    cols = np.broadcast_to(np.arange(m), s.shape)
    order = np.lexsort((cols, -s), axis=1)[:, :k]  # -0.0 == +0.0: the index decides
    vals = np.take_along_axis(s, order, axis=1)
    idx = np.where(np.isneginf(vals), -1, order)
    pad = max(0, k - m)
    idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
    vals = np.pad(vals, ((0, 0), (0, pad)), constant_values=-np.inf)
    return idx, vals


def tied(n: int, m: int, d: int = 2, seed: int = 0):
    """Integer embeddings in {-1, 0, 1}: few distinct scores, exact in float32."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-1, 2, size=(n, d)).astype(np.float32)
    it = rng.integers(-1, 2, size=(m, d)).astype(np.float32)
    return q, it


# ---- defect: -0.0 keyed below +0.0 -------------------------------------------------------
def test_negative_zero_ties_with_positive_zero():
    """-0.0 == +0.0: the lower column wins, not the sign (the select keyed them apart)."""
    # products that underflow: torch's CPU product gives item 0 -0.0 and item 1 +0.0 (the
    # sign of a zero sum depends on the BLAS; the explicit zeros below do not)
    q = np.array([[1e-30, -1e-30]], np.float32)
    it = np.array([[0, 1e-30], [1e-30, 0], [-1, -1], [-1, -1]], np.float32)
    idx, scores = top_k_by_dot(q, it, 1, device="cpu")
    assert idx.tolist() == [[0]] and scores[0, 0] == 0.0
    assert dot_top_k(torch.from_numpy(q), torch.from_numpy(it), 1)[0].tolist() == [[0]]
    zeros = np.array([[-0.0, 0.0, -1, -1], [-1, 0.0, -0.0, -1]], np.float32)
    assert full_ranking_topk(zeros, 1, device="cpu").tolist() == [[0], [1]]
    many = np.zeros((3, 400), np.float32)  # k a small part of the row: the select, sampled
    many[:, ::2] = -0.0
    many[1, :50] = -1.0
    for k in (1, 7, 60):
        np.testing.assert_array_equal(
            full_ranking_topk(many, k, device="cpu"), reference(many, k)[0]
        )
    _, got = full_ranking_topk(many, 2, device="cpu", return_scores=True)
    assert np.signbit(got[0]).tolist() == [True, False]  # the scores as given, signs and all


# ---- defect: torch.topk's own tie order -------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 4, 9, 12, 15])
def test_full_ranking_ties_on_every_path(device, dtype, k):
    """float32 with 4k > m, float64 and CUDA take torch.topk: the same lists as the select."""
    q, it = tied(40, 12, seed=k)
    scores = (q @ it.T).astype(dtype)
    scores[3] = 0.0  # a constant row: every item tied
    scores[5, ::3] = -np.inf  # some excluded: never returned, padding when k is large
    want_i, want_s = reference(scores, k)
    idx, got_s = full_ranking_topk(scores, k, device=device, return_scores=True)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(got_s, want_s)
    assert full_ranking_topk(np.zeros((1, 12), dtype), 4, device=device).tolist() == [[0, 1, 2, 3]]


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_full_ranking_ties_with_exclusion_and_wide_rows(device):
    """Many tied scores across the k-th place, an exclusion, float64 rows of 3,000 items."""
    q, it = tied(70, 3000, seed=1)
    scores = q.astype(np.float64) @ it.T.astype(np.float64)
    ex = sp.random(70, 3000, density=0.3, random_state=2, format="csr")
    for k in (1, 10, 100, 900):
        got = full_ranking_topk(scores, k, exclude=ex, device=device, chunk_size=32)
        np.testing.assert_array_equal(got, reference(scores, k, ex.toarray() == 0)[0])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("N", [1, 3, 5, 40, 130, 140])
def test_per_row_candidates_ties_go_to_the_lower_index(device, N):
    """A CSR of candidates is masked on the full rows and ranked by torch.topk (at a large
    N): the same lists as the threshold select gives without candidates."""
    q, it = tied(25, 130, seed=N)
    cand = sp.random(25, 130, density=0.4, random_state=N, format="csr")
    ex = sp.random(25, 130, density=0.2, random_state=N + 1, format="csr")
    allowed = (cand.toarray() != 0) & (ex.toarray() == 0)
    idx, scores = top_k_by_dot(q, it, N, candidates=cand, exclude=ex, device=device)
    want_i, want_s = reference(q @ it.T, N, allowed)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(scores, want_s.astype(np.float32))
    got = top_k_by_dot(np.ones((1, 1), np.float32), np.ones((7, 1), np.float32), 3,
                       candidates=sp.csr_matrix(np.ones((1, 7))), device=device)  # fmt: skip
    assert got[0].tolist() == [[0, 1, 2]]


# ---- defect: faiss's own tie order and the over-fetch -----------------------------------
def test_faiss_path_ties_go_to_the_lower_index_whatever_the_other_rows():
    """Over MAX_ITEMS items: faiss's flat search. Its lists come in (score, index) order, a
    tie across the N-th place is settled exactly, and a row's list does not depend on how
    much the other rows of its chunk exclude (their over-fetch)."""
    pytest.importorskip("faiss")
    m = MAX_ITEMS + 4_000
    it = np.ones((m, 2), np.float32)
    q = np.ones((2, 2), np.float32)
    idx, scores = top_k_by_dot(q, it, 5, device="cpu")
    assert idx.tolist() == [[0, 1, 2, 3, 4]] * 2 and (scores == 2.0).all()
    ex = sp.csr_matrix((np.ones(3), ([0, 0, 0], [0, 1, 2])), shape=(2, m))
    idx, _ = top_k_by_dot(q, it, 5, exclude=ex, device="cpu")
    assert idx.tolist() == [[3, 4, 5, 6, 7], [0, 1, 2, 3, 4]]

    q, it = tied(6, m, seed=3)
    it[m // 2 :] = it[: m - m // 2]  # every vector twice: ties inside the lists too
    rows, cols = [0, 0, 1, 2, 2, 2, 2, 2], [5, 9, 1, 0, 2, 4, 6, 8]
    ex = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(6, m))
    allowed = np.ones((6, m), bool)
    allowed[rows, cols] = False
    for N in (1, 4, 50):
        want_i, want_s = reference(q @ it.T, N, allowed)
        idx, scores = top_k_by_dot(q, it, N, exclude=ex, device="cpu")
        np.testing.assert_array_equal(idx, want_i)
        np.testing.assert_array_equal(scores, want_s.astype(np.float32))
        alone, _ = top_k_by_dot(q[1:2], it, N, exclude=ex[1:2], device="cpu")
        np.testing.assert_array_equal(alone, want_i[1:2])  # the same list without row 2


def test_faiss_path_distinct_scores_keep_their_order(monkeypatch):
    """No tie at the N-th place: faiss's lists are kept, none redone (the common case)."""
    pytest.importorskip("faiss")
    import ncf.retrieval

    redone = []
    exact = ncf.retrieval._torch_top_k
    monkeypatch.setattr(ncf.retrieval, "_torch_top_k", lambda *a: redone.append(a[3]) or exact(*a))
    rng = np.random.default_rng(4)
    m = MAX_ITEMS + 1_000
    q = rng.normal(size=(5, 4)).astype(np.float32)
    it = rng.normal(size=(m, 4)).astype(np.float32)
    idx, scores = top_k_by_dot(q, it, 20, device="cpu")
    assert redone == []  # faiss's lists, re-ordered only where tied
    s = q.astype(np.float64) @ it.T.astype(np.float64)
    np.testing.assert_allclose(scores, np.take_along_axis(s, idx, axis=1), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    top = np.argsort(-s, axis=1)[:, :20]
    assert np.mean(idx == top) > 0.95  # the same lists up to float32 rounding
    it[3] = it[7] = 10 * q[0]  # two items tied at row 0's top: its first place is a tie
    idx, _ = top_k_by_dot(q, it, 1, device="cpu")
    assert len(redone) == 1 and 0 in redone[0] and idx[0, 0] == 3


# ---- the shared re-ordering ---------------------------------------------------------------
def test_ties_to_lower_index_reorders_only_what_is_out_of_order():
    idx = np.array([[7, 3, 5, 1, -1, -1], [0, 1, 2, 3, 4, 5], [9, 8, 4, 2, 6, 7]])
    scores = np.array(
        [[2.0, 2.0, 1.0, 1.0, -np.inf, -np.inf], [5, 4, 3, 2, 1, 0], [1, 1, -0.0, 0.0, 0, -1]],
        np.float32,
    )
    untouched = scores[1].copy()
    # the rows to sort, found alike in numpy and in torch (where `_torch_top_k` finds them)
    assert out_of_order_rows(idx, scores).tolist() == [True, False, True]
    as_torch = out_of_order_rows(torch.from_numpy(idx), torch.from_numpy(scores))
    assert as_torch.tolist() == [True, False, True]
    got_i, got_s = ties_to_lower_index(idx, scores)
    assert got_i.tolist() == [[3, 7, 1, 5, -1, -1], [0, 1, 2, 3, 4, 5], [8, 9, 2, 4, 6, 7]]
    np.testing.assert_array_equal(got_s[0], [2, 2, 1, 1, -np.inf, -np.inf])
    np.testing.assert_array_equal(got_s[1], untouched)
    one = np.array([[4], [2]])
    assert ties_to_lower_index(one, np.zeros((2, 1), np.float32))[0].tolist() == [[4], [2]]
