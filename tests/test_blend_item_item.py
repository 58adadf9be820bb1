"""The closed-form blend features (item-item and learner-learner EASE at each cutoff) and the
rank blender."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from baselines.ease import ease_weights
from blend import ItemItem, LearnerLearner, RankBlender
from blend.features import zscore_within_learner


def _watches(seed: int = 0, n_learners: int = 60, n_courses: int = 25) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_learners, n_courses)) < 0.2).astype(np.float64))


def test_item_item_pair_scores_are_exact_ease_at_full_rank():
    X = _watches()
    B = ease_weights(X, 5.0)  # (courses, courses) dense EASE
    full = np.asarray(X @ B)  # (learners, courses)
    rng = np.random.default_rng(1)
    li, ci = rng.integers(0, 60, 500), rng.integers(0, 25, 500)
    off = li != ci  # EASE's zero diagonal does not matter to pairs of other courses
    item = ItemItem(l2=5.0, rank=100).fit(X)
    got = item.score_pairs(X, li, ci)
    seen = np.asarray(X[li, ci]).ravel() > 0  # low-rank B's diagonal is not zero: unseen only
    np.testing.assert_allclose(got[off & ~seen], full[li, ci][off & ~seen], rtol=1e-4, atol=1e-5)


def test_item_item_unknown_learners_score_zero_and_shapes_are_checked():
    X = _watches()
    item = ItemItem(l2=5.0, rank=8).fit(X)
    s = item.score_pairs(X, np.array([-1, 3]), np.array([2, 2]))
    assert s[0] == 0.0 and s[1] != 0.0
    with pytest.raises(ValueError, match="one length"):
        item.score_pairs(X, np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match="fitted on 25"):
        item.score_pairs(_watches(n_courses=30), np.array([1]), np.array([1]))
    with pytest.raises(RuntimeError, match="not fitted"):
        ItemItem().score_pairs(X, np.array([1]), np.array([1]))


def test_learner_learner_pair_scores_are_exact_ease_on_learners_at_full_rank():
    X = _watches()  # (60 learners, 25 courses)
    Xt = sp.csr_matrix(X.T)
    full = np.asarray(Xt @ ease_weights(Xt, 5.0)).T  # (learners, courses): learners as items
    rng = np.random.default_rng(1)
    li, ci = rng.integers(0, 60, 500), rng.integers(0, 25, 500)
    peers = LearnerLearner(l2=5.0, rank=100).fit(X)  # rank >= 25 = min(60, 25): exact
    got = peers.score_pairs(X, li, ci)
    seen = np.asarray(X[li, ci]).ravel() > 0  # low-rank B's diagonal is not zero: unseen only
    assert (~seen).sum() > 300
    np.testing.assert_allclose(got[~seen], full[li, ci][~seen], rtol=1e-4, atol=1e-5)
    # not the item-item direction: the two features differ
    item = ItemItem(l2=5.0, rank=100).fit(X).score_pairs(X, li, ci)
    assert np.corrcoef(item[~seen], got[~seen])[0, 1] < 0.99


def test_learner_learner_scores_zero_without_history_and_refuses_another_matrix():
    X = _watches().tolil()
    X[7, :] = 0  # learner 7 watched nothing
    X = sp.csr_matrix(X)
    peers = LearnerLearner(l2=5.0, rank=100).fit(X)
    s = peers.score_pairs(X, np.array([-1, 7, 3]), np.array([2, 2, 2]))
    assert s[0] == 0.0 and s[2] != 0.0
    assert abs(s[1]) < 1e-6  # their column of the weights is 0
    other = _watches(seed=5)
    with pytest.raises(ValueError, match="not the one the scorer was fitted on"):
        peers.score_pairs(other, np.array([1]), np.array([1]))
    with pytest.raises(ValueError, match="one length"):
        peers.score_pairs(X, np.array([1, 2]), np.array([1]))
    with pytest.raises(RuntimeError, match="LearnerLearner is not fitted"):
        LearnerLearner().score_pairs(X, np.array([1]), np.array([1]))


def test_zscore_within_learner_standardizes_each_learners_rows():
    t = pd.DataFrame({"learner_id": [7, 7, 7, 2, 2, 5], "x": [1.0, 2.0, 3.0, 4.0, 4.0, 9.0]})
    z = zscore_within_learner(t, "x")
    np.testing.assert_allclose(z[:3], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert (z[3:] == 0.0).all()  # constant learners: 0, not NaN


def _ranking_data(
    seed: int = 0, n_learners: int = 200, per: int = 30
) -> tuple[pd.DataFrame, np.ndarray]:
    """Candidates where 'good' orders the watched courses and 'noise' is noise."""
    rng = np.random.default_rng(seed)
    n = n_learners * per
    learner = np.repeat(np.arange(n_learners), per)
    affinity = rng.normal(size=n)
    good = affinity + rng.normal(scale=0.5, size=n)
    helper = affinity + rng.normal(scale=0.5, size=n)
    y = (affinity > np.quantile(affinity, 0.9)).astype(float)
    t = pd.DataFrame({"learner_id": learner, "course_id": np.tile(np.arange(per), n_learners),
                      "good": good, "helper": helper, "noise": rng.normal(size=n)})  # fmt: skip
    return t, y


def test_rank_blender_weights_the_informative_feature_and_ignores_noise():
    t, y = _ranking_data()
    b = RankBlender(["good", "helper", "noise"], tau=0.3).fit(t, y)
    w = b.coefficients()
    assert w["good"] == 1.0  # fixed: ranking is scale-invariant
    assert w["helper"] > 0.5 and abs(w["noise"]) < 0.2
    # it ranks held-out data better than the first feature alone
    t2, y2 = _ranking_data(seed=1)
    s = b.score(t2)

    def mean_rank(score):
        order = pd.Series(score).groupby(t2["learner_id"]).rank(ascending=False)
        return float(order[y2 > 0].mean())

    assert mean_rank(s) < mean_rank(t2["good"].to_numpy()) - 0.5
    assert b.fit_objective_ < mean_rank(t["good"].to_numpy())  # fit objective reached


def test_rank_blender_with_the_ndcg_objective_ranks_better_at_the_top():
    t, y = _ranking_data()
    b = RankBlender(["good", "helper", "noise"], tau=0.3, objective="ndcg").fit(t, y)
    w = b.coefficients()
    assert w["good"] == 1.0 and w["helper"] > 0.5 and abs(w["noise"]) < 0.2, w
    t2, y2 = _ranking_data(seed=1)

    def ndcg(score):
        rank = pd.Series(score).groupby(t2["learner_id"]).rank(ascending=False).to_numpy()
        dcg = pd.Series(y2 / np.log2(1 + rank)).groupby(t2["learner_id"]).sum()
        n = pd.Series(y2).groupby(t2["learner_id"]).sum().astype(int)
        ideal = n.map(lambda k: (1 / np.log2(2 + np.arange(k))).sum())
        return float((dcg[n > 0] / ideal[n > 0]).mean())

    assert ndcg(b.score(t2)) > ndcg(t2["good"].to_numpy()) + 0.02
    assert 0 < b.fit_objective_ < 1  # the exact NDCG reached on the fitted rows


def test_rank_blender_refuses_an_unknown_objective():
    t, y = _ranking_data(n_learners=10)
    with pytest.raises(ValueError, match="objective: must be one of"):
        RankBlender(["good"], objective="expected_clicks").fit(t, y)


def test_rank_blender_needs_positives():
    t, _ = _ranking_data(n_learners=3)
    with pytest.raises(ValueError, match="positives and negatives"):
        RankBlender(["good"]).fit(t, np.zeros(len(t)))


def test_rank_blender_fits_a_seeded_sample_of_learners_above_max_pairs():
    t, y = _ranking_data(n_learners=200, per=30)
    full = RankBlender(["good", "helper"]).fit(t, y)
    assert full.fit_learners_ == full.learners_with_engagement_
    small = RankBlender(["good", "helper"], max_pairs=3_000).fit(t, y)
    assert 0 < small.fit_learners_ < small.learners_with_engagement_
    # ~3 engagements x 29 other rows per learner: about 3,000 / 87 learners
    assert abs(small.fit_learners_ - 3_000 / 87) < 15
    again = RankBlender(["good", "helper"], max_pairs=3_000).fit(t, y)
    assert again.coefficients() == small.coefficients()  # seeded
    assert small.coefficients()["helper"] > 0.3  # a sample still finds the signal


def test_item_item_pair_scores_do_not_depend_on_the_block_size(monkeypatch):
    import blend.item_item as module

    X = _watches(seed=3)
    item = ItemItem(l2=5.0, rank=16).fit(X)
    rng = np.random.default_rng(2)
    li, ci = rng.integers(0, 60, 1000), rng.integers(0, 25, 1000)
    whole = item.score_pairs(X, li, ci)
    monkeypatch.setattr(module, "_BLOCK_BYTES", 4 * 16 * 7)  # 7 pairs a block: 143 blocks
    np.testing.assert_array_equal(item.score_pairs(X, li, ci), whole)


def test_rank_blender_weighs_engagements_by_their_sample_weight():
    """Half the learners watch by 'good', half by 'helper': the weights decide which half the
    fitted weights follow."""
    rng = np.random.default_rng(3)
    n_learners, per = 300, 20
    n = n_learners * per
    learner = np.repeat(np.arange(n_learners), per)
    good, helper = rng.normal(size=n), rng.normal(size=n)
    by_helper = learner % 2 == 1  # (n,) rows of the learners who follow 'helper'
    utility = np.where(by_helper, helper, good) + 0.3 * rng.normal(size=n)
    y = np.zeros(n)
    y[pd.Series(utility).groupby(learner).idxmax().to_numpy()] = 1
    t = pd.DataFrame({"learner_id": learner, "course_id": np.tile(np.arange(per), n_learners),
                      "good": good, "helper": helper})  # fmt: skip
    to_helper = RankBlender(["good", "helper"]).fit(
        t, y, sample_weight=np.where(by_helper, 10.0, 1.0)
    )
    to_good = RankBlender(["good", "helper"]).fit(
        t, y, sample_weight=np.where(by_helper, 1.0, 10.0)
    )
    assert to_helper.coefficients()["helper"] > 1.5 > 0.67 > to_good.coefficients()["helper"]
    with pytest.raises(ValueError, match="sample_weight: expected shape"):
        RankBlender(["good", "helper"]).fit(t, y, sample_weight=np.ones(n - 1))
    with pytest.raises(ValueError, match="sample_weight: must be finite and >= 0; 1 of"):
        RankBlender(["good", "helper"]).fit(t, y, sample_weight=np.r_[-1.0, np.ones(n - 1)])
