"""Ranking metrics: hand-computed cases, sklearn's ndcg_score, a plain per-user reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import ndcg_score

from evaluation import (
    catalogue_coverage,
    intra_list_diversity,
    novelty,
    ranking_metrics,
)

L2 = math.log2


def _csr(rows: list[dict[int, float]], n_items: int) -> sp.csr_array:
    dense = np.zeros((len(rows), n_items))
    for i, row in enumerate(rows):
        for j, g in row.items():
            dense[i, j] = g
    return sp.csr_array(dense)


# Five users, 6 items, lists of width 3 (-1 pads user 1's list).
#   user 0: truth {1, 3}       list [1, 2, 3]   hits [1, 0, 1]
#   user 1: truth {0, 4, 5}    list [2, 4, -1]  hits [0, 1, 0]
#   user 2: truth {}           list [0, 1, 2]   skipped (empty truth)
#   user 3: truth {2}          list [5, 0, 1]   no hit
#   user 4: truth {0, 1, 2, 3} list [0, 5, 1]   hits [1, 0, 1]
TRUTH = _csr([{1: 1, 3: 1}, {0: 1, 4: 1, 5: 1}, {}, {2: 1}, {0: 1, 1: 1, 2: 1, 3: 1}], 6)
TOPK = np.array([[1, 2, 3], [2, 4, -1], [0, 1, 2], [5, 0, 1], [0, 5, 1]])
IDCG2 = 1 + 1 / L2(3)  # two relevant items
IDCG3 = 1 + 1 / L2(3) + 1 / L2(4)  # three or more relevant items, cut at 3


def test_hand_computed_binary_at_3_and_1():
    m = ranking_metrics(TOPK, TRUTH, ks=(1, 3))
    np.testing.assert_array_equal(m.users, [0, 1, 3, 4])
    assert m.n_skipped_empty == 1
    p = m.per_user
    np.testing.assert_allclose(p["hr@3"], [1, 1, 0, 1])
    np.testing.assert_allclose(p["precision@3"], [2 / 3, 1 / 3, 0, 2 / 3])
    np.testing.assert_allclose(p["recall@3"], [2 / 2, 1 / 3, 0, 2 / 4])
    # DCG: user 0 = 1/log2(2) + 1/log2(4) = 1.5; user 1 = 1/log2(3); user 4 = 1.5.
    np.testing.assert_allclose(p["ndcg@3"], [1.5 / IDCG2, (1 / L2(3)) / IDCG3, 0, 1.5 / IDCG3])
    # AP numerators: user 0 = 1/1 + 2/3; user 1 = 1/2; user 4 = 1/1 + 2/3.
    # Denominator min(|R|, 3): 2, 3, 1, 3.
    np.testing.assert_allclose(p["map@3"], [(5 / 3) / 2, 0.5 / 3, 0, (5 / 3) / 3])
    np.testing.assert_allclose(p["mrr@3"], [1, 1 / 2, 0, 1])
    # At k=1 only position 1 counts: users 0 and 4 hit.
    np.testing.assert_allclose(p["hr@1"], [1, 0, 0, 1])
    np.testing.assert_allclose(p["recall@1"], [1 / 2, 0, 0, 1 / 4])
    np.testing.assert_allclose(p["ndcg@1"], [1, 0, 0, 1])
    np.testing.assert_allclose(p["map@1"], [1, 0, 0, 1])  # 1 / min(|R|, 1)
    np.testing.assert_allclose(p["mrr@1"], [1, 0, 0, 1])
    s = m.summary()
    assert s["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 0 + 2 / 3) / 4)
    assert s["n_users"] == 4 and s["n_skipped_empty"] == 1
    # Coverage over the evaluated lists (users 0, 1, 3, 4): at 3 all six items appear;
    # at 1 the first items are 1, 2, 5, 0 -> 4 of 6.
    assert s["coverage@3"] == pytest.approx(1.0)
    assert s["coverage@1"] == pytest.approx(4 / 6)
    frame = m.to_frame()
    assert list(frame["user"]) == [0, 1, 3, 4] and "ndcg@3" in frame


def test_map_conventions_differ_as_defined():
    legacy = ranking_metrics(TOPK, TRUTH, ks=(1, 3), map_denominator="relevant").per_user
    # Denominator |R|: 2, 3, 1, 4.
    np.testing.assert_allclose(legacy["map@3"], [(5 / 3) / 2, 0.5 / 3, 0, (5 / 3) / 4])
    np.testing.assert_allclose(legacy["map@1"], [1 / 2, 0, 0, 1 / 4])


def test_graded_ndcg_hand_computed():
    # Gains: item 0 -> 3, item 2 -> 2, item 4 -> 1; list [2, 0, 5].
    truth = _csr([{0: 3.0, 2: 2.0, 4: 1.0}], 6)
    topk = np.array([[2, 0, 5]])
    lin = ranking_metrics(topk, truth, ks=3, ndcg_gain="linear").per_user["ndcg@3"]
    dcg, idcg = 2 + 3 / L2(3), 3 + 2 / L2(3) + 1 / L2(4)
    assert lin[0] == pytest.approx(dcg / idcg)  # 0.817491
    exp = ranking_metrics(topk, truth, ks=3, ndcg_gain="exp2").per_user["ndcg@3"]
    dcg, idcg = 3 + 7 / L2(3), 7 + 3 / L2(3) + 1 / L2(4)  # gains 2^rel - 1: 7, 3, 1
    assert exp[0] == pytest.approx(dcg / idcg)  # 0.789595
    binary = ranking_metrics(topk, truth, ks=3, ndcg_gain="binary").per_user["ndcg@3"]
    assert binary[0] == pytest.approx((1 + 1 / L2(3)) / IDCG3)


def _random_case(seed: int, n: int = 200, n_items: int = 40, width: int = 10, graded=True):
    """Continuous random scores (no ties), top-`width` by argsort, sparse random truth."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, n_items))
    topk = np.argsort(-scores, axis=1)[:, :width]
    mask = rng.random((n, n_items)) < rng.uniform(0, 0.3, size=(n, 1))
    gains = rng.integers(1, 6, size=(n, n_items)).astype(float) if graded else np.ones((n, n_items))
    return scores, topk, sp.csr_array(np.where(mask, gains, 0.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("graded", [True, False])
def test_ndcg_matches_sklearn(seed, graded):
    scores, topk, truth = _random_case(seed, graded=graded)
    m = ranking_metrics(topk, truth, ks=(3, 10))
    keep = m.users
    for k in (3, 10):
        ref = ndcg_score(truth.toarray()[keep], scores[keep], k=k)
        assert m.summary()[f"ndcg@{k}"] == pytest.approx(ref, abs=1e-12)


def _reference(lists, truth, k, map_denominator, gain):
    """Plain per-user Python: sets and loops, the definitions written out."""
    dense = truth.toarray()
    out = {name: [] for name in ("hr", "precision", "recall", "ndcg", "map", "mrr")}
    g = {"linear": lambda r: r, "exp2": lambda r: 2**r - 1, "binary": lambda r: 1.0}[gain]
    for u in range(dense.shape[0]):
        rel = {int(i): float(dense[u, i]) for i in np.flatnonzero(dense[u])}
        if not rel:
            continue
        items = [int(i) for i in lists[u, :k] if i >= 0]
        hits = [i in rel for i in items]
        out["hr"].append(float(any(hits)))
        out["precision"].append(sum(hits) / k)
        out["recall"].append(sum(hits) / len(rel))
        dcg = sum(g(rel[i]) / math.log2(j + 2) for j, i in enumerate(items) if i in rel)
        ideal = sorted((g(v) for v in rel.values()), reverse=True)[:k]
        out["ndcg"].append(dcg / sum(v / math.log2(j + 2) for j, v in enumerate(ideal)))
        ap, seen = 0.0, 0
        for j, h in enumerate(hits):
            if h:
                seen += 1
                ap += seen / (j + 1)
        den = min(len(rel), k) if map_denominator == "min_relevant_k" else len(rel)
        out["map"].append(ap / den)
        first = next((j for j, h in enumerate(hits) if h), None)
        out["mrr"].append(0.0 if first is None else 1 / (first + 1))
    return {name: np.array(v) for name, v in out.items()}


@pytest.mark.parametrize("map_denominator", ["min_relevant_k", "relevant"])
@pytest.mark.parametrize("gain", ["linear", "exp2", "binary"])
def test_matches_plain_python_reference_with_padding(map_denominator, gain):
    _, topk, truth = _random_case(5, n=300)
    rng = np.random.default_rng(9)
    length = rng.integers(0, 11, size=topk.shape[0])  # random list lengths, incl. empty lists
    topk = np.where(np.arange(10) < length[:, None], topk, -1)
    m = ranking_metrics(topk, truth, ks=(1, 5, 10), map_denominator=map_denominator, ndcg_gain=gain)
    for k in (1, 5, 10):
        ref = _reference(topk, truth, k, map_denominator, gain)
        for name, values in ref.items():
            np.testing.assert_allclose(m.per_user[f"{name}@{k}"], values, rtol=0, atol=1e-12)


def test_padding_never_counts_as_a_hit():
    # Padding key -1 of row 1 would alias item n_items-1 of row 0 if not masked.
    truth = _csr([{5: 1}, {0: 1}], 6)
    m = ranking_metrics(np.array([[0, 1], [-1, -1]]), truth, ks=2)
    np.testing.assert_array_equal(m.per_user["hr@2"], [0, 0])


def test_users_select_truth_rows_and_empty_rows_are_counted():
    truth = _csr([{0: 1}, {}, {2: 1}, {3: 1}], 5)
    topk = np.array([[3, 0], [2, 1], [1, 2]])  # lists for truth rows 3, 1, 0
    m = ranking_metrics(topk, truth, ks=2, users=[3, 1, 0])
    np.testing.assert_array_equal(m.users, [3, 0])
    assert m.n_skipped_empty == 1
    np.testing.assert_allclose(m.per_user["mrr@2"], [1.0, 0.0])


def test_explicit_zero_gain_is_not_relevant():
    truth = sp.csr_array((np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 2])), shape=(1, 3))
    m = ranking_metrics(np.array([[0, 1]]), truth, ks=2)
    assert m.per_user["recall@2"][0] == 1.0 and m.per_user["mrr@2"][0] == 0.5


def test_all_users_empty():
    m = ranking_metrics(np.array([[0, 1]]), _csr([{}], 3), ks=2)
    assert m.n_users == 0 and m.n_skipped_empty == 1
    assert math.isnan(m.summary()["ndcg@2"])


def test_diversity_novelty_coverage_hand_computed():
    category = np.array([0, 0, 1, 1, 2, 2])
    lists = np.array([[0, 1, 2], [0, 2, 4], [0, -1, -1], [0, 2, -1]])
    # [0, 1, 2]: categories 0, 0, 1 -> 3 pairs, 1 same -> 2/3; [0, 2, 4]: all differ -> 1;
    # one item -> no pair -> NaN; [0, 2]: categories 0, 1 -> 1.
    np.testing.assert_allclose(intra_list_diversity(lists, category), [2 / 3, 1, np.nan, 1])
    pop = np.array([4, 2, 1, 1, 0, 0])  # shares 1/2, 1/4, 1/8, 1/8 -> -log2: 1, 2, 3, 3
    np.testing.assert_allclose(novelty(np.array([[0, 1, -1], [2, 3, 0]]), pop), [1.5, 7 / 3])
    assert catalogue_coverage(np.array([[0, 1], [1, 2], [-1, -1]]), 6) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="popularity 0"):
        novelty(np.array([[4]]), pop)
    with pytest.raises(ValueError, match="codes must be >= 0"):
        intra_list_diversity(lists, np.array([0, -1, 0, 0, 0, 0]))


def test_beyond_accuracy_inside_ranking_metrics():
    m = ranking_metrics(
        TOPK, TRUTH, ks=3, item_category=np.array([0, 0, 1, 1, 2, 2]), item_popularity=np.ones(6)
    )
    # user 0: [1, 2, 3] categories 0, 1, 1 -> 1 same of 3 pairs.
    assert m.per_user["diversity@3"][0] == pytest.approx(2 / 3)
    np.testing.assert_allclose(m.per_user["novelty@3"], np.log2(6))  # uniform popularity


@pytest.mark.parametrize(
    ("topk", "match"),
    [
        (np.array([[0, -1, 1]]), "padding"),
        (np.array([[0, 0, 1]]), "once per list"),
        (np.array([[0, 6, 1]]), r"\[0, 6\)"),
        (np.array([[0, -2, 1]]), r"\[0, 6\)"),
        (np.array([0, 1]), "2-D"),
        (np.array([[0.0, 1.0]]), "integer"),
    ],
)
def test_bad_topk(topk, match):
    with pytest.raises(ValueError, match=match):
        ranking_metrics(topk, _csr([{0: 1}], 6), ks=1)


def test_bad_arguments():
    truth = _csr([{0: 1}, {1: 1}], 6)
    with pytest.raises(ValueError, match="truth: has 2 rows but topk has 1"):
        ranking_metrics(np.array([[0]]), truth, ks=1)
    with pytest.raises(ValueError, match="exceed the list width K=1"):
        ranking_metrics(np.array([[0], [1]]), truth, ks=5)
    with pytest.raises(ValueError, match=r"users: must be truth row indices in \[0, 2\)"):
        ranking_metrics(np.array([[0]]), truth, ks=1, users=[2])
    with pytest.raises(ValueError, match="expected length 1"):
        ranking_metrics(np.array([[0]]), truth, ks=1, users=[0, 1])
    with pytest.raises(ValueError, match="map_denominator"):
        ranking_metrics(np.array([[0], [1]]), truth, ks=1, map_denominator="k")
    with pytest.raises(ValueError, match="finite and >= 0"):
        ranking_metrics(np.array([[0]]), _csr([{0: -1.0}], 6), ks=1)
    with pytest.raises(TypeError, match="scipy sparse"):
        ranking_metrics(np.array([[0]]), np.ones((1, 6)), ks=1)


def test_edge_inputs_found_by_an_audit():
    """bfloat16 and integer score sources rank exactly; exp2 gains of watched seconds do not
    overflow; target_ranks never counts an excluded item, tolerates NaN only where excluded
    and names a short score source; k=True is not k=1."""
    import torch

    from evaluation import Factors, full_ranking_topk, target_ranks

    q, items = torch.randn(4, 8), torch.randn(50, 8)
    want = full_ranking_topk(Factors(q.bfloat16().float(), items.bfloat16().float()), 5,
                             device="cpu")  # fmt: skip
    got = full_ranking_topk(Factors(q.bfloat16(), items.bfloat16()), 5, device="cpu")
    np.testing.assert_array_equal(got, want)
    assert full_ranking_topk(np.array([[16777216, 16777217, 5]]), 1, device="cpu").tolist() == [
        [1]
    ]  # fmt: skip
    truth = sp.csr_matrix(np.array([[1100.0, 0, 5], [0, 1.0, 0]]))
    r = ranking_metrics(np.array([[2, 0], [1, 0]]), truth, 2, ndcg_gain="exp2")
    # user 0 lists the gain-5 item, then the 1100 one: NDCG ~ 1 / log2(3) (2^5 is negligible)
    assert r.per_user["ndcg@2"].tolist() == pytest.approx([1 / math.log2(3), 1.0], rel=1e-12)
    one = sp.csr_matrix(np.array([[1.0, 0, 0]]))
    ranks = target_ranks(np.array([[-np.inf, 0.0, -np.inf]]), one,
                         exclude=sp.csr_matrix(np.array([[0, 0, 1.0]])), device="cpu").ranks  # fmt: skip
    assert ranks.tolist() == [2]  # only item 1 is a candidate
    excluded_nan = target_ranks(np.array([[1.0, np.nan, 0.5]]), one,
                                exclude=sp.csr_matrix(np.array([[0, 1.0, 0]])), device="cpu")  # fmt: skip
    assert excluded_nan.ranks.tolist() == [1]
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(np.array([[1.0, np.nan, 0.5]]), one, device="cpu")
    with pytest.raises(ValueError, match="scores: has 1 rows but users index up to 1"):
        target_ranks(np.zeros((1, 3)), sp.csr_matrix(np.ones((2, 3))), device="cpu")
    with pytest.raises(ValueError, match="positive ints; got True"):
        ranking_metrics(np.array([[0, 1]]), sp.csr_matrix(np.array([[1.0, 1.0]])), True)
