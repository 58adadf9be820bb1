"""evaluation.threshold_select: the exact top-N of a score block by a sampled threshold (keys
that order floats as floats, short rows reported, the reused flag buffer), and the paths that
use it (dot_top_k, evaluation.full_ranking_topk) against a plain sort."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import evaluation.threshold_select as threshold_select
from evaluation import Factors, full_ranking_topk, target_ranks


def test_select_above_orders_by_score_across_signs_and_reports_short_rows():
    """The 64-bit keys (row | descending score | column) must order negative and positive
    scores, zeros and the largest floats as the floats do, give the bits back unchanged,
    ignore -inf (masked entries) and say which rows had fewer than N above their seed."""
    big = np.finfo(np.float32).max
    flat = np.array(
        [
            [-3.5, 2.0, -0.0, 0.0, -1e-30, 7.25, -np.inf, -2.0],  # mixed signs, a signed zero
            [1.0, 1.0, -big, big, 0.5, -0.5, 1.0, -np.inf],  # ties, the float range's ends
            [-np.inf, -np.inf, -np.inf, 5.0, -np.inf, -np.inf, -np.inf, -np.inf],  # 1 allowed
        ],
        dtype=np.float32,
    )
    seed = np.array([-3.0, -np.inf, 0.0], dtype=np.float32)
    idx, scores, short = threshold_select.select_above(flat, seed, 4)
    np.testing.assert_array_equal(short, [2])  # row 2: one score above 0.0, N = 4
    # 7.25, 2.0, then -0.0 and +0.0: equal floats, a tie, so by column (signs kept in scores)
    np.testing.assert_array_equal(idx[0], [5, 1, 2, 3])
    np.testing.assert_array_equal(scores[0].view(np.uint32), flat[0, [5, 1, 2, 3]].view(np.uint32))
    np.testing.assert_array_equal(idx[1], [3, 0, 1, 6])  # big, then the three 1.0 by column
    np.testing.assert_array_equal(scores[1], [big, 1.0, 1.0, 1.0])
    idx, scores, short = threshold_select.select_above(flat, np.full(3, np.inf, np.float32), 2)
    np.testing.assert_array_equal(short, [0, 1, 2])  # nothing above: every row redone


def test_select_above_with_positive_seeds_matches_a_full_sort_bit_for_bit():
    """Seeds >= 0 take the one-subtraction key (every survivor is positive); ties, +0.0 as a
    seed, subnormals and the largest float must come out as a stable descending sort does."""
    rng = np.random.default_rng(3)
    flat = rng.normal(size=(9, 50)).astype(np.float32)
    flat[0, :5] = [np.finfo(np.float32).max, 1e-45, 1e-40, 0.0, -0.0]  # max, subnormals, zeros
    flat[1, 10:14] = flat[1, 3]  # a four-way tie
    flat[2, ::3] = -np.inf  # masked entries
    seed = np.zeros(9, np.float32)  # +0.0: only strictly positive scores survive
    idx, scores, short = threshold_select.select_above(flat, seed, 6)
    assert short.size == 0
    order = np.argsort(-flat, axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(idx, order)
    want = np.take_along_axis(flat, order, axis=1)
    np.testing.assert_array_equal(scores.view(np.uint32), want.view(np.uint32))


def test_positions_above_ignores_flags_left_in_a_reused_buffer():
    """The compare buffer is reused across blocks and read 8 flags at a time: flags a larger
    block left past the current one's end (its last word is partial) must not count."""
    rng = np.random.default_rng(4)
    hits = np.empty(8 * 13 + 8, np.bool_)
    big = rng.normal(size=(8, 13)).astype(np.float32)
    threshold_select._positions_above(big, np.full(8, -np.inf, np.float32), hits)  # every flag set
    small = rng.normal(size=(3, 13)).astype(np.float32)  # 39 flags: the 5th word is partial
    seed = np.array([0.5, -0.5, 10.0], np.float32)
    got = threshold_select._positions_above(small, seed, hits)
    np.testing.assert_array_equal(got, np.flatnonzero(small > seed[:, None]))
    np.testing.assert_array_equal(threshold_select._positions_above(small, seed, None), got)


# ------------------------------------------------- evaluation.full_ranking_topk on float32


def _float32_case(seed: int = 0, n: int = 300, m: int = 500):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, m)).astype(np.float32)
    scores[5, 100:140] = scores[5, 7]  # a tie that straddles the top 20
    scores[9] = np.round(scores[9])  # many ties in one row
    mask = rng.random((n, m)) < 0.05
    mask[11] = True  # a user with every course excluded: padding only
    mask[12] = True
    mask[12, [3, 4, 5]] = False  # a user with three courses left
    exclude = sp.csr_array(mask.astype(np.float32))
    return scores, exclude


def _stable_reference(scores, exclude, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.where(exclude.toarray() > 0, -np.inf, np.asarray(scores))
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]  # ties: lower index first
    vals = np.take_along_axis(s, order, axis=1)
    return np.where(vals == -np.inf, -1, order), vals


@pytest.mark.parametrize("chunk_size", [1, 100, 2048])
def test_float32_full_ranking_is_a_stable_sort_with_padding(chunk_size, monkeypatch):
    """CPU float32 scores take the threshold select (observed, not assumed) and give the
    stable descending sort: ties to the lower item index, -1 / -inf past a user's allowed
    courses, bit-identical scores."""
    scores, exclude = _float32_case()
    calls = []
    real = threshold_select.select_above
    monkeypatch.setattr(threshold_select, "select_above",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))  # fmt: skip
    items, vals = full_ranking_topk(
        scores, 20, exclude=exclude, chunk_size=chunk_size, return_scores=True, device="cpu"
    )
    want_items, want_vals = _stable_reference(scores, exclude, 20)
    assert calls
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(vals, want_vals)
    assert vals.dtype == np.float32
    assert (items[11] == -1).all() and (items[12, 3:] == -1).all()


def test_float32_full_ranking_is_exact_when_every_threshold_is_too_high(monkeypatch):
    """A sampled threshold above every score leaves every row short: all are redone with
    their exact k-th score as the threshold, and the lists are the same, ties included."""
    scores, exclude = _float32_case(seed=1)
    monkeypatch.setattr(threshold_select, "kth_largest",
                        lambda part, k: np.full(part.shape[0], 1e30, np.float32))  # fmt: skip
    items, vals = full_ranking_topk(scores, 20, exclude=exclude, return_scores=True)
    want_items, want_vals = _stable_reference(scores, exclude, 20)
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(vals, want_vals)


def test_top_n_exact_keeps_ties_at_the_nth_score_and_pads_short_rows():
    """The redo: every score tied with the N-th survives its threshold and the lowest
    columns win; a row with fewer than N finite scores is its finite scores then padding;
    N >= m takes every finite score."""
    rows = np.array(
        [
            [1.0, 3.0, 2.0, 2.0, 2.0, 2.0, 0.5],  # N = 3: 3.0, then the first two 2.0s
            [-np.inf, 4.0, -np.inf, -np.inf, -1.0, -np.inf, -np.inf],  # two finite
            [-0.0, 0.0, -1e-45, 1e-45, -np.inf, 7.0, 7.0],  # signed zeros, subnormals
        ],
        dtype=np.float32,
    )
    idx, scores = threshold_select.top_n_exact(rows, 3)
    np.testing.assert_array_equal(idx, [[1, 2, 3], [1, 4, -1], [5, 6, 3]])
    np.testing.assert_array_equal(scores[1], [4.0, -1.0, -np.inf])
    idx, scores = threshold_select.top_n_exact(rows, 9)  # N > m: every finite score, sorted
    np.testing.assert_array_equal(idx[1], [1, 4] + [-1] * 7)
    np.testing.assert_array_equal(idx[2, :6], [5, 6, 3, 0, 1, 2])  # -0.0 ties +0.0: by column


def test_float32_path_names_users_with_nan_and_float64_takes_torch_topk(monkeypatch):
    scores, _ = _float32_case(seed=2)
    scores[[40, 170], 3] = np.nan
    scores[41, [0, 1]] = [np.inf, -np.inf]  # sums to NaN, but is not NaN: no error for it
    with pytest.raises(ValueError, match=r"NaN for 2 user\(s\).*users 40, 170"):
        full_ranking_topk(scores, 10, chunk_size=1000, device="cpu")
    calls = []
    monkeypatch.setattr(threshold_select, "select_above",
                        lambda *a, **kw: calls.append(1))  # fmt: skip
    full_ranking_topk(scores[:30].astype(np.float64), 10, device="cpu")
    assert not calls


# ------------------------------------------------------------ Factors: products, blocked


def _factors_case(seed: int = 0, n: int = 400, m: int = 600, d: int = 16):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, d)).astype(np.float32)
    items = rng.normal(size=(m, d)).astype(np.float32)
    exclude = sp.csr_array((rng.random((n, m)) < 0.05).astype(np.float32))
    return q, items, exclude


def _dense_reference(q, items, exclude, k):
    return _stable_reference(torch.from_numpy(q) @ torch.from_numpy(items).T, exclude, k)


@pytest.mark.parametrize("callable_queries", [False, True])
def test_factors_rank_blockwise_like_the_dense_product(callable_queries, monkeypatch):
    """Factors on the CPU in float32 go through dot_top_k (observed) and give the stable
    sort of the product: the same items and the same float32 scores, chunk by chunk."""
    q, items, exclude = _factors_case()
    calls = []
    real = threshold_select.dot_top_k
    monkeypatch.setattr(threshold_select, "dot_top_k",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))  # fmt: skip
    queries = (lambda u: torch.from_numpy(q[u])) if callable_queries else q
    users = np.arange(400) if callable_queries else None
    got_items, got_vals = full_ranking_topk(
        Factors(queries, items), 25, users=users, exclude=exclude, chunk_size=150,
        return_scores=True, device="cpu",
    )  # fmt: skip
    want_items, want_vals = _dense_reference(q, items, exclude, 25)
    assert len(calls) == 3  # 400 users in chunks of 150
    np.testing.assert_array_equal(got_items, want_items)
    np.testing.assert_allclose(got_vals, want_vals, rtol=1e-6)


def test_factors_fall_back_to_the_product_when_blocking_cannot_be_trusted(monkeypatch):
    """NaN in a query row (named, as for any score source), norms that could overflow,
    float64 and a k close to the catalogue take the product and the chunk path."""
    q, items, exclude = _factors_case(seed=1)
    calls = []
    monkeypatch.setattr(threshold_select, "dot_top_k", lambda *a, **kw: calls.append(1))
    bad = q.copy()
    bad[[17, 301], 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN for 1 user\(s\).*users 17"):
        full_ranking_topk(Factors(bad, items), 10, chunk_size=200, device="cpu")
    huge = q * np.float32(1e19)  # |q| |x| > 1e37: a score could overflow
    got = full_ranking_topk(Factors(huge, items), 10, exclude=exclude, device="cpu")
    np.testing.assert_array_equal(got, _dense_reference(huge, items, exclude, 10)[0])
    got = full_ranking_topk(Factors(q.astype(np.float64), items.astype(np.float64)), 10)
    np.testing.assert_array_equal(got, _dense_reference(q, items, sp.csr_array((400, 600)), 10)[0])
    full_ranking_topk(Factors(q, items), 200, device="cpu")  # 4 x 200 > 600 items
    assert not calls


def test_factors_shape_errors_and_target_ranks():
    q, items, exclude = _factors_case(seed=2, n=50, m=40)
    with pytest.raises(ValueError, match=r"Factors.queries: must give shape .* = \(50, 16\)"):
        full_ranking_topk(Factors(lambda u: q[u, :8], items), 5, users=np.arange(50))
    with pytest.raises(ValueError, match=r"Factors.items must be a 2-D float"):
        full_ranking_topk(Factors(q, items[0]), 5)
    targets = sp.csr_array((np.random.default_rng(0).random((50, 40)) < 0.1).astype(np.float32))
    dense = q @ items.T
    a = target_ranks(Factors(q, items), targets, exclude=exclude)
    b = target_ranks(dense, targets, exclude=exclude)
    np.testing.assert_array_equal(a.ranks, b.ranks)


def test_sample_of_is_a_copy_of_spread_runs():
    """The sample is 16 runs of consecutive columns, one per sixteenth of the row, copied:
    kth_largest partitions it in place, which must never touch the scores."""
    flat = np.arange(3 * 1_000, dtype=np.float32).reshape(3, 1_000)
    part = threshold_select.sample_of(flat, 80)  # 16 runs of 5 columns, 62 apart
    assert part.shape == (3, 80) and not np.may_share_memory(part, flat)
    np.testing.assert_array_equal(part[0, :6], [0, 1, 2, 3, 4, 62])
    np.testing.assert_array_equal(part[1, -5:], 1_000 + 15 * 62 + np.arange(5))
    threshold_select.kth_largest(part, 3)
    np.testing.assert_array_equal(flat, np.arange(3_000, dtype=np.float32).reshape(3, 1_000))
    small = threshold_select.sample_of(flat[:, :100], 40)  # a short row: a prefix, copied
    np.testing.assert_array_equal(small, flat[:, :40])
    assert not np.may_share_memory(small, flat)
