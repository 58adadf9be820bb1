"""blend.replay: exact ranks, the surrogate's gradient, the optimizers, the click curve;
blend.evaluate: truth of a window, list metrics, the tournament."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import approx_fprime

from blend import PositionCurve, ReplaySet, tune_weights
from blend.evaluate import list_metrics, tournament, window_truth
from blend.replay import METHODS
from watchlog.cleaning import clean
from watchlog.splits import temporal_split


def _replay(n_learners=120, n_cand=25, seed=0):
    """Engagement utility = 1.0 a + 0.5 b (+ noise); c is noise."""
    rng = np.random.default_rng(seed)
    n = n_learners * n_cand
    X = rng.normal(size=(n, 3))
    util = X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=n)
    learner = np.repeat(np.arange(n_learners), n_cand)
    best = pd.Series(util).groupby(learner).idxmax().to_numpy()
    y = np.zeros(n, dtype=np.int8)
    y[best] = 1
    table = pd.DataFrame(
        {"learner_id": learner, "course_id": np.tile(np.arange(n_cand), n_learners)}
    )
    return ReplaySet.from_candidates(table, X, y, ["a", "b", "c"]), X, learner, y


def test_exact_ranks_match_a_brute_force_count():
    rs, X, learner, y = _replay(n_learners=10, n_cand=6)
    w = np.array([1.0, -0.3, 0.2])
    s = X @ w
    expect = [1 + int((s[learner == learner[e]] > s[e]).sum()) for e in np.flatnonzero(y)]
    np.testing.assert_array_equal(rs.ranks(w), expect)
    assert rs.objective(w, "mean_rank") == pytest.approx(np.mean(expect))


def test_exact_ndcg_is_the_mean_over_engaged_learners_of_dcg_over_ideal():
    rng = np.random.default_rng(4)
    n_learners, n_cand = 12, 7
    X = rng.normal(size=(n_learners * n_cand, 3))
    learner = np.repeat(np.arange(n_learners), n_cand)
    y = (rng.random(len(learner)) < 0.3).astype(np.int8)
    y[learner == 0] = 0  # a learner without engagements does not count
    table = pd.DataFrame({"learner_id": learner, "course_id": np.tile(np.arange(n_cand), 12)})
    rs = ReplaySet.from_candidates(table, X, y, ["a", "b", "c"])
    w = np.array([1.0, 0.5, -0.2])
    s = X @ w
    per_learner = []
    for u in range(1, n_learners):
        mine = learner == u
        if y[mine].sum() == 0:
            continue
        rank = 1 + np.argsort(np.argsort(-s[mine]))  # 1 = top; no ties in normal draws
        dcg = (y[mine] / np.log2(1 + rank)).sum()
        ideal = (1 / np.log2(2 + np.arange(y[mine].sum()))).sum()
        per_learner.append(dcg / ideal)
    assert -rs.objective(w, "ndcg") == pytest.approx(np.mean(per_learner))
    assert 0 < np.mean(per_learner) < 1


@pytest.mark.parametrize("kind", ["mean_rank", "expected_clicks", "ndcg"])
def test_surrogate_gradient_matches_finite_differences(kind):
    rs, *_ = _replay(n_learners=15, n_cand=8)
    curve = PositionCurve(0.3, 1.1)
    w = np.array([1.0, 0.4, -0.2])
    value, grad = rs.surrogate(w, kind, 0.5, curve)
    numeric = approx_fprime(w, lambda v: rs.surrogate(v, kind, 0.5, curve)[0], 1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)
    # scale invariance: the surrogate of 3 w is the surrogate of w
    assert rs.surrogate(3 * w, kind, 0.5, curve)[0] == pytest.approx(value)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_improves_on_the_two_tower_alone_and_finds_the_useful_feature(method):
    rs, *_ = _replay(seed=1)
    init = [1.0, 0.0, 0.0]
    before = rs.objective(np.array(init), "mean_rank")
    res = tune_weights(rs, init, objective="mean_rank", method=method, seed=0)
    assert res.method == method and res.seconds > 0 and res.evaluations > 0
    assert res.objective < before - 0.3, (res.objective, before)
    assert res.weights["a"] == 1.0  # held fixed
    assert 0.15 < res.weights["b"] < 1.5 and abs(res.weights["c"]) < 0.4, res.weights


@pytest.mark.parametrize("method", METHODS)
def test_one_feature_has_nothing_to_tune_and_every_method_says_so(method):
    _, X, learner, y = _replay(seed=1)
    table = pd.DataFrame({"learner_id": learner, "course_id": np.tile(np.arange(25), 120)})
    rs = ReplaySet.from_candidates(table, X[:, :1], y, ["a"])
    res = tune_weights(rs, [2.0], objective="mean_rank", method=method, seed=0)
    assert res.weights == {"a": 2.0} and res.evaluations == 0
    assert res.objective == rs.objective(np.array([2.0]), "mean_rank")


def test_expected_clicks_are_maximized():
    rs, *_ = _replay(seed=2)
    curve = PositionCurve(0.3, 1.1)
    before = -rs.objective(np.array([1.0, 0.0, 0.0]), "expected_clicks", curve)
    res = tune_weights(rs, [1.0, 0.0, 0.0], objective="expected_clicks", curve=curve)
    assert res.objective > before


def test_ndcg_is_maximized_and_finds_the_useful_feature():
    rs, *_ = _replay(seed=3)
    before = -rs.objective(np.array([1.0, 0.0, 0.0]), "ndcg")
    res = tune_weights(rs, [1.0, 0.0, 0.0], objective="ndcg")
    assert res.objective > before + 0.02, (res.objective, before)
    assert res.objective == pytest.approx(
        -rs.objective(np.array(list(res.weights.values())), "ndcg")
    )
    assert 0.15 < res.weights["b"] < 1.5 and abs(res.weights["c"]) < 0.4, res.weights


def test_tune_weights_rejects_bad_arguments():
    rs, *_ = _replay(n_learners=5, n_cand=4)
    with pytest.raises(ValueError, match="objective"):
        tune_weights(rs, [1, 0, 0], objective="clicks")
    with pytest.raises(ValueError, match="method"):
        tune_weights(rs, [1, 0, 0], method="adam")
    with pytest.raises(ValueError, match="expected 3 weights"):
        tune_weights(rs, [1, 0])
    with pytest.raises(ValueError, match="needs a PositionCurve"):
        rs.objective(np.ones(3), "expected_clicks")
    for method in METHODS:  # weight 0 is held: at 0 the gradient divided by a zero norm
        with pytest.raises(ValueError, match=r"init: weight 0 is held fixed .* non-zero"):
            tune_weights(rs, [0.0, 1.0, 0.0], method=method)
    with pytest.raises(ValueError, match=r"init: .*finite"):
        tune_weights(rs, [1.0, np.nan, 0.0])


def test_position_curve_recovers_a_power_law_from_impressions():
    rng = np.random.default_rng(0)
    pos = rng.integers(1, 9, size=200_000)
    clicked = rng.random(pos.size) < 0.4 * pos**-0.8
    ev = pd.DataFrame({"impression": True, "position": pos, "clicked": clicked.astype(int)})
    curve = PositionCurve.from_impressions(ev)
    assert curve.a == pytest.approx(0.4, rel=0.05) and curve.b == pytest.approx(0.8, rel=0.05)
    assert set(curve.observed) == set(range(1, 9))
    # no positions at all: the documented default
    assert PositionCurve.from_impressions(ev.drop(columns="position")).source.startswith("default")


def test_position_curve_counts_positions_shown_without_a_click():
    """Deep positions with few expected clicks (0.1 / p at 300 impressions each): a fit of log
    ctr could only use the positions that happened to get a click, the lucky ones, and
    flattened the curve (b 0.76 on average over 20 seeds); the likelihood uses them all."""
    fits = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        pos = np.repeat(np.arange(1, 51), 300)
        clicked = (rng.random(pos.size) < 0.1 / pos).astype(int)
        ev = pd.DataFrame({"impression": True, "position": pos, "clicked": clicked})
        curve = PositionCurve.from_impressions(ev)
        assert set(curve.observed) == set(range(1, 51))  # zero-click positions too
        assert any(c == 0 for _, c in curve.observed.values())
        fits.append((curve.a, curve.b))
    a, b = np.mean(fits, axis=0)
    assert a == pytest.approx(0.1, rel=0.1) and b == pytest.approx(1.0, abs=0.05)
    # impressions but no click anywhere: no rate to fit, the default
    ev = pd.DataFrame({"impression": True, "position": np.repeat([1, 2], 200), "clicked": 0})
    assert PositionCurve.from_impressions(ev).source.startswith("default")


@pytest.fixture(scope="module")
def log_split(small_platform):
    log = clean(small_platform.log)
    return log, temporal_split(log, valid_days=30, test_days=30)


def test_window_truth_holds_new_watches_with_their_seconds(log_split):
    from blend import seen_before

    log, split = log_split
    fold = split.test
    seen = seen_before(log, fold.cutoff)
    truth = window_truth(log, fold, seen)
    lab = fold.labels[fold.labels["watched"]]
    pairs = lab.groupby(["learner_idx", "course_idx"], observed=True)["watch_seconds"].sum()
    for (li, ci), secs in pairs.head(50).items():
        if seen[li, ci]:
            assert truth[li, ci] == 0  # watched before the cutoff: no label
        else:
            assert truth[li, ci] == pytest.approx(secs, rel=1e-5)
    assert truth.multiply(seen).nnz == 0
    binary = window_truth(log, fold, seen, gain="binary")
    assert set(np.unique(binary.data)) == {1.0} and binary.nnz == truth.nnz
    # a watch without a known or positive watch time is still a label (gain 1 s)
    events = log.events.copy()
    label_rows = np.flatnonzero(
        events["watched"].to_numpy() & (events["ts"] >= fold.cutoff).to_numpy()
        & (events["ts"] < fold.label_end).to_numpy()
    )[:10]  # fmt: skip
    events.loc[events.index[label_rows[:5]], "watch_seconds"] = np.nan
    events.loc[events.index[label_rows[5:]], "watch_seconds"] = 0.0
    holed = dataclasses.replace(log, events=events)
    fold2 = temporal_split(holed, valid_days=30, test_days=30).test
    truth2 = window_truth(holed, fold2, seen)
    assert truth2.nnz == binary.nnz  # nothing dropped
    assert truth2.data.min() > 0


def test_list_metrics_count_a_missing_list_as_all_misses_and_tournament_pairs_learners(log_split):
    import scipy.sparse as sp

    log, _ = log_split
    truth = sp.csr_matrix(
        ([1.0, 1.0, 1.0], ([0, 1, 2], [5, 6, 7])), shape=(log.n_learners, log.n_courses)
    )
    ids = log.learner_ids.to_ids([0, 1, 2])
    courses = log.course_ids.to_ids([5, 9, 7])
    lists = pd.DataFrame({"learner_id": ids[[0, 1]], "rank": [1, 1], "course_id": courses[:2]})
    res = list_metrics(lists, log, truth)
    assert res.n_users == 3  # learner 2 has no list: judged, not skipped
    np.testing.assert_allclose(res.per_user["hr@10"], [1.0, 0.0, 0.0])
    better = pd.DataFrame({"learner_id": ids, "rank": [1, 1, 1], "course_id": courses})
    t = tournament(res, list_metrics(better, log, truth), "hr@10", n_boot=2000)
    assert t.mean_diff == pytest.approx(1 / 3) and t.win_rate > 0.5 and t.n == 3


def _weighted(n_learners=15, n_cand=8, seed=5):
    """A replay set with 1-3 engagements a learner and their weights."""
    rng = np.random.default_rng(seed)
    n = n_learners * n_cand
    X = rng.normal(size=(n, 3))
    learner = np.repeat(np.arange(n_learners), n_cand)
    y = np.zeros(n, dtype=np.int8)
    for u in range(n_learners):  # a test fixture: a loop over 15 learners
        y[u * n_cand + rng.choice(n_cand, size=1 + u % 3, replace=False)] = 1
    weights = np.where(y > 0, rng.uniform(0.5, 4.0, size=n), rng.uniform(0, 9, size=n))
    table = pd.DataFrame(
        {"learner_id": learner, "course_id": np.tile(np.arange(n_cand), n_learners)}
    )
    return table, X, learner, y, weights


def test_weighted_objectives_match_a_brute_force_per_learner():
    table, X, learner, y, weights = _weighted()
    rs = ReplaySet.from_candidates(table, X, y, ["a", "b", "c"], weights=weights)
    w = np.array([1.0, -0.4, 0.7])
    s = X @ w
    engaged = np.flatnonzero(y)
    rank = np.array([1 + (s[learner == learner[e]] > s[e]).sum() for e in engaged])
    g = weights[engaged]  # only the engagements' weights count
    assert rs.objective(w, "mean_rank") == pytest.approx((g * rank).sum() / g.sum())
    curve = PositionCurve(0.3, 1.1)
    clicks = (g * curve(rank.astype(float))).sum() / g.sum()
    assert -rs.objective(w, "expected_clicks", curve) == pytest.approx(clicks)
    per_learner = []
    for u in np.unique(learner[engaged]):
        mine = learner[engaged] == u
        dcg = (g[mine] / np.log2(1 + rank[mine])).sum()
        ideal = (np.sort(g[mine])[::-1] / np.log2(2 + np.arange(mine.sum()))).sum()
        per_learner.append(dcg / ideal)
    assert -rs.objective(w, "ndcg") == pytest.approx(np.mean(per_learner))
    # the weights change the objectives: not the unweighted ones
    plain = ReplaySet.from_candidates(table, X, y, ["a", "b", "c"])
    assert rs.objective(w, "mean_rank") != pytest.approx(plain.objective(w, "mean_rank"))
    assert rs.objective(w, "ndcg") != pytest.approx(plain.objective(w, "ndcg"))


@pytest.mark.parametrize("kind", ["mean_rank", "expected_clicks", "ndcg"])
def test_weighted_surrogate_gradient_matches_finite_differences(kind):
    table, X, _, y, weights = _weighted()
    rs = ReplaySet.from_candidates(table, X, y, ["a", "b", "c"], weights=weights)
    curve = PositionCurve(0.3, 1.1)
    w = np.array([1.0, 0.4, -0.2])
    _, grad = rs.surrogate(w, kind, 0.5, curve)
    numeric = approx_fprime(w, lambda v: rs.surrogate(v, kind, 0.5, curve)[0], 1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)


def test_equal_weights_are_no_weights_and_a_zero_weight_is_no_engagement():
    table, X, _, y, weights = _weighted()
    plain = ReplaySet.from_candidates(table, X, y, ["a", "b", "c"])
    equal = ReplaySet.from_candidates(table, X, y, ["a", "b", "c"], weights=np.full(len(y), 2.5))
    assert equal.weight is None
    w = np.array([1.0, 0.3, 0.1])
    for kind in ("mean_rank", "ndcg"):
        assert equal.objective(w, kind) == plain.objective(w, kind)  # bit for bit
        assert equal.surrogate(w, kind, 0.3)[0] == plain.surrogate(w, kind, 0.3)[0]
    first = np.flatnonzero(y)[0]
    zeroed = weights.copy()
    zeroed[first] = 0.0
    unlabelled = y.copy()
    unlabelled[first] = 0
    a = ReplaySet.from_candidates(table, X, y, ["a", "b", "c"], weights=zeroed)
    b = ReplaySet.from_candidates(table, X, unlabelled, ["a", "b", "c"], weights=weights)
    assert a.n_engagements == b.n_engagements == y.sum() - 1
    for kind in ("mean_rank", "ndcg"):
        assert a.objective(w, kind) == pytest.approx(b.objective(w, kind))


def test_replay_weights_are_checked():
    table, X, _, y, weights = _weighted(n_learners=4, n_cand=5)
    with pytest.raises(ValueError, match=r"expected shape \(20,\)"):
        ReplaySet.from_candidates(table, X, y, ["a", "b", "c"], weights=weights[:-1])
    bad = weights.copy()
    bad[[2, 7]] = [np.nan, -1.0]
    with pytest.raises(ValueError, match="finite and >= 0; 2 of 20 are not"):
        ReplaySet.from_candidates(table, X, y, ["a", "b", "c"], weights=bad)
    with pytest.raises(ValueError, match="no engagement"):
        ReplaySet.from_candidates(table, X, y, ["a", "b", "c"], weights=np.zeros(len(y)))
