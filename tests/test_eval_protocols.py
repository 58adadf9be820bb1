"""Full-ranking and sampled protocols: top-k, target ranks, negative sampling, sampled metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from evaluation import (
    evaluate_full_ranking,
    evaluate_sampled,
    full_ranking_topk,
    ranking_metrics,
    resolve_device,
    sample_negatives,
    sampled_metrics,
    target_ranks,
)


def _case(seed: int = 0, n: int = 50, n_items: int = 30, density: float = 0.2):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, n_items))  # continuous: no ties
    exclude = sp.csr_array((rng.random((n, n_items)) < density).astype(np.float32))
    truth = sp.csr_array((rng.random((n, n_items)) < 0.1).astype(np.float32))
    return scores, exclude, truth


def _reference_topk(scores: np.ndarray, exclude, k: int) -> np.ndarray:
    s = np.where(exclude.toarray() > 0, -np.inf, scores)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(s, order, axis=1) == -np.inf, -1, order)


# ---------------------------------------------------------------- full ranking


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
@pytest.mark.parametrize("kind", ["numpy", "tensor", "callable_np", "callable_torch"])
def test_topk_matches_argsort_for_every_source_and_chunking(chunk_size, kind):
    scores, exclude, _ = _case()
    before = scores.copy()
    source = {
        "numpy": scores,
        "tensor": torch.from_numpy(scores),
        "callable_np": lambda u: scores[u],
        "callable_torch": lambda u: torch.from_numpy(scores)[torch.from_numpy(u)],
    }[kind]
    users = np.arange(50) if kind.startswith("callable") else None
    got = full_ranking_topk(
        source, 8, users=users, exclude=exclude, chunk_size=chunk_size, device="cpu"
    )
    np.testing.assert_array_equal(got, _reference_topk(scores, exclude, 8))
    np.testing.assert_array_equal(scores, before)  # the caller's scores are untouched


def test_topk_does_not_write_into_a_view_returned_by_score_fn():
    scores, exclude, _ = _case()
    store = torch.from_numpy(scores.copy())
    full_ranking_topk(lambda u: store[: len(u)], 5, users=np.arange(50), exclude=exclude)
    assert torch.isfinite(store).all()


def test_topk_user_subset_padding_and_scores():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1], [1.0, 2.0, 3.0]])
    exclude = sp.csr_array(np.array([[0, 1, 0], [1, 1, 0], [0, 0, 0]]))
    items, vals = full_ranking_topk(
        scores, 4, users=[1, 0], exclude=exclude, return_scores=True, device="cpu"
    )
    # user 1: only item 2 is a candidate; user 0: items 2 (0.5) then 0 (0.1); k=4 > n_items.
    np.testing.assert_array_equal(items, [[2, -1, -1, -1], [2, 0, -1, -1]])
    np.testing.assert_allclose(vals[1, :2], [0.5, 0.1])
    assert np.isneginf(vals[0, 1:]).all()


def test_topk_errors():
    scores, exclude, _ = _case()
    with pytest.raises(ValueError, match="users: required"):
        full_ranking_topk(lambda u: scores[u], 5)
    with pytest.raises(ValueError, match=r"shape \(len\(users_chunk\), n_items\) = \(50, 30\)"):
        full_ranking_topk(lambda u: scores[u, :20], 5, users=np.arange(50), exclude=exclude)
    with pytest.raises(ValueError, match="exclude: expected 30 columns"):
        full_ranking_topk(scores, 5, exclude=exclude[:, :20])
    with pytest.raises(ValueError, match="exclude: has 10 rows but users index up to 49"):
        full_ranking_topk(scores, 5, exclude=exclude[:10])
    bad = scores.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN for 1 user\(s\).*users 3"):
        full_ranking_topk(bad, 5, chunk_size=4)
    with pytest.raises(ValueError, match="chunk_size"):
        full_ranking_topk(scores, 5, chunk_size=0)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_topk_same_on_cuda():
    scores, exclude, _ = _case()
    cpu = full_ranking_topk(scores, 8, exclude=exclude, device="cpu")
    np.testing.assert_array_equal(full_ranking_topk(scores, 8, exclude=exclude, device="cuda"), cpu)


def test_evaluate_full_ranking_equals_topk_then_metrics():
    scores, exclude, truth = _case(3)
    res = evaluate_full_ranking(scores, truth, ks=(5, 10), exclude=exclude, chunk_size=9)
    ref = ranking_metrics(full_ranking_topk(scores, 10, exclude=exclude), truth, ks=(5, 10))
    np.testing.assert_array_equal(res.users, ref.users)
    assert res.n_skipped_empty == ref.n_skipped_empty > 0
    for name, values in ref.per_user.items():
        np.testing.assert_allclose(res.per_user[name], values)


# ---------------------------------------------------------------- target ranks


def test_target_ranks_hand_computed_ties_count_against_target():
    # Scores 0.5, 0.9, 0.5, 0.1, 0.7; item 1 excluded; targets 0, 1, 2.
    #   item 2: other candidates >= 0.5 are item 0 (tie) and item 4 -> rank 3
    #   item 0: item 2 (tie) and item 4 -> rank 3
    #   item 1 (excluded but a target keeps its score 0.9): nobody >= 0.9 -> rank 1
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.7]])
    targets = sp.csr_array(np.array([[1, 1, 1, 0, 0]]))
    exclude = sp.csr_array(np.array([[0, 1, 0, 0, 0]]))
    r = target_ranks(scores, targets, exclude=exclude, device="cpu")
    np.testing.assert_array_equal(r.items, [0, 1, 2])
    np.testing.assert_array_equal(r.ranks, [3, 1, 3])
    s = r.summary()
    assert s["mean_rank"] == pytest.approx(7 / 3) and s["median_rank"] == 3
    assert s["mrr"] == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)


def test_target_ranks_constant_scores_rank_last():
    targets = sp.csr_array(np.array([[0, 1, 0, 0], [1, 0, 0, 1]]))
    exclude = sp.csr_array(np.array([[1, 0, 0, 0], [0, 0, 0, 0]]))
    r = target_ranks(np.zeros((2, 4)), targets, exclude=exclude)
    # user 0: 3 candidates (items 1, 2, 3) -> rank 3; user 1: 4 candidates -> rank 4.
    np.testing.assert_array_equal(r.ranks, [3, 4, 4])


def test_target_ranks_match_brute_force():
    scores, exclude, truth = _case(4)
    scores = np.round(scores, 1)  # plenty of ties
    r = target_ranks(lambda u: scores[u], truth, exclude=exclude, chunk_size=6)
    ex = exclude.toarray() > 0
    for u, i, rank in zip(r.users, r.items, r.ranks, strict=True):
        others = ~ex[u] & (np.arange(scores.shape[1]) != i)
        assert rank == 1 + np.sum(scores[u, others] >= scores[u, i])
    assert r.users.size == truth.nnz


# ---------------------------------------------------------------- negative sampling


def _sampling_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    n_users, n_items = 300, 400
    # The last 3 users know ~60% of the items: < 4 x 99 candidates, so the exact path runs.
    density = np.r_[rng.uniform(0, 0.2, n_users - 3), 0.6, 0.6, 0.65]
    known = rng.random((n_users, n_items)) < density[:, None]
    users = np.r_[rng.integers(0, n_users - 3, 2000), n_users - 3, n_users - 2, n_users - 1]
    pos = rng.integers(0, n_items, users.size)
    return sp.csr_array(known.astype(np.float32)), users, pos


@pytest.mark.parametrize(
    "budget",
    [{}, {"batch_size": 5000, "max_rounds": 1}],  # small batches; leftovers go to the exact path
)
def test_negatives_properties(budget):
    exclude, users, pos = _sampling_case()
    neg = sample_negatives(users, pos, exclude, 99, seed=1, **budget)
    assert neg.shape == (users.size, 99) and neg.dtype == np.int64
    assert (neg >= 0).all() and (neg < exclude.shape[1]).all()
    assert not (neg == pos[:, None]).any()  # the positive is never its own negative
    srt = np.sort(neg, axis=1)
    assert not (srt[:, 1:] == srt[:, :-1]).any()  # no duplicates within a row
    assert not exclude.toarray()[users[:, None], neg].any()  # never a known item
    np.testing.assert_array_equal(neg, sample_negatives(users, pos, exclude, 99, seed=1, **budget))
    assert not np.array_equal(neg, sample_negatives(users, pos, exclude, 99, seed=2, **budget))


def test_negatives_roughly_uniform_over_candidates():
    exclude = sp.csr_array((1, 50), dtype=np.float32)  # nothing known: 49 candidates
    neg = sample_negatives(
        np.zeros(4000, dtype=np.int64), np.zeros(4000, dtype=np.int64), exclude, 5
    )
    counts = np.bincount(neg.ravel(), minlength=50)
    assert counts[0] == 0
    expected = 4000 * 5 / 49  # ~408 each, sd ~20
    assert np.abs(counts[1:] - expected).max() < 6 * math.sqrt(expected)


def test_negatives_exact_path_when_candidates_are_scarce():
    # 12 items, 2 known, positive 0: exactly 9 candidates for 9 negatives.
    exclude = sp.csr_array(np.array([[0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]]))
    neg = sample_negatives([0, 0], [0, 3], exclude, 9, seed=0)
    assert sorted(neg[0]) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert sorted(neg[1]) == [0, 4, 5, 6, 7, 8, 9, 10, 11]


def test_negatives_error_names_users_with_too_few_candidates():
    exclude = sp.csr_array(np.array([[1] * 8 + [0] * 4, [0] * 12]))
    with pytest.raises(ValueError, match=r"1 pair\(s\) have fewer than n_negatives=5.*users 0"):
        sample_negatives([0, 1], [9, 9], exclude, 5)
    with pytest.raises(ValueError, match=r"positives: must be in \[0, 12\)"):
        sample_negatives([0], [12], exclude, 2)
    with pytest.raises(ValueError, match="expected length 2"):
        sample_negatives([0, 1], [3], exclude, 2)


# ---------------------------------------------------------------- sampled metrics


def test_sampled_metrics_hand_computed():
    # pair 0: pos 0.5 vs negatives 0.9, 0.5, 0.1 -> 0.9 and the tie beat it -> rank 3
    # pair 1: pos 1.0 beats all -> rank 1; pair 2: all equal -> rank 4 (last)
    pos = np.array([0.5, 1.0, 0.2])
    neg = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1], [0.2, 0.2, 0.2]])
    m = sampled_metrics(pos, neg, ks=(1, 3))
    np.testing.assert_array_equal(m.per_user["rank"], [3, 1, 4])
    np.testing.assert_array_equal(m.per_user["hr@1"], [0, 1, 0])
    np.testing.assert_array_equal(m.per_user["hr@3"], [1, 1, 0])
    np.testing.assert_allclose(m.per_user["ndcg@3"], [1 / math.log2(4), 1, 0])
    np.testing.assert_allclose(m.per_user["mrr"], [1 / 3, 1, 1 / 4])
    assert m.extra["median_rank"] == 3
    with pytest.raises(ValueError, match=r"expected shape \(n_pairs, N\) = \(3, N\)"):
        sampled_metrics(pos, neg[:2])
    with pytest.raises(ValueError, match="exceed the list width K=4"):
        sampled_metrics(pos, neg, ks=5)


def test_evaluate_sampled_end_to_end():
    exclude, users, pos = _sampling_case(2)
    oracle = evaluate_sampled(
        lambda u, items: (items == items[:, :1]).astype(float), users, pos, exclude, ks=10
    )
    assert oracle.summary()["hr@10"] == 1.0 and oracle.summary()["mrr"] == 1.0
    constant = evaluate_sampled(lambda u, items: np.zeros(items.shape), users, pos, exclude)
    assert constant.summary()["rank"] == 100.0  # ties against the positive: last of 100
    with pytest.raises(ValueError, match="score_pairs: must return shape"):
        evaluate_sampled(lambda u, items: np.zeros(len(u)), users, pos, exclude)
