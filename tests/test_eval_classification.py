"""AUC (plain, weighted, per entity, bootstrapped over entities), log loss and the calibration
table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from evaluation import (
    auc,
    calibration_table,
    entity_bootstrap_auc,
    log_loss,
    per_entity_auc,
    percentile_interval,
)


def test_auc_hand_computed():
    y = [0, 0, 1, 1]
    # Positive 0.35 beats negative 0.1, loses to 0.4; positive 0.8 beats both: 3 of 4 pairs.
    assert auc(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # Positive 0.4 ties negative 0.4 (counts 1/2): (1 + 0.5 + 2) / 4.
    assert auc(y, [0.1, 0.4, 0.4, 0.8]) == pytest.approx(0.875)
    # Weights 1, 2 (negatives), 3, 1 (positives): W+ = 4, W- = 3.
    # 0.35 (w 3) beats 0.1 (w 1): 3; 0.8 (w 1) beats both: 1 * 3 -> 6 / 12.
    assert auc(y, [0.1, 0.4, 0.35, 0.8], sample_weight=[1, 2, 3, 1]) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_sklearn_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 1000)
    s = rng.integers(0, 25, 1000) / 7.0  # many ties
    w = rng.exponential(size=1000)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert auc(y.astype(bool), s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_errors():
    with pytest.raises(ValueError, match="both classes"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="both classes"):
        auc([0, 1], [0.1, 0.2], sample_weight=[1.0, 0.0])  # the only positive weighs 0
    with pytest.raises(ValueError, match="labels must be 0/1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="y_score: expected length 2; got 3"):
        auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="sample_weight: must be >= 0"):
        auc([0, 1], [0.1, 0.2], sample_weight=[1, -1])


def test_per_entity_auc_hand_computed():
    # A: y 0, 1 with scores 0.2, 0.9 -> 1.0
    # B: y 1, 0, 1 with 0.5, 0.5, 0.1 -> pos 0.5 ties neg 0.5 (1/2), pos 0.1 loses -> 0.25
    # C: two positives -> skipped; D: one negative -> skipped
    entity = ["A", "A", "B", "B", "B", "C", "C", "D"]
    y = [0, 1, 1, 0, 1, 1, 1, 0]
    s = [0.2, 0.9, 0.5, 0.5, 0.1, 0.3, 0.4, 0.5]
    r = per_entity_auc(entity, y, s)
    assert r.n_entities == 4 and r.n_skipped_single_class == 2
    assert r.mean == pytest.approx((1.0 + 0.25) / 2)
    assert r.row_weighted_mean == pytest.approx((2 * 1.0 + 3 * 0.25) / 5)
    t = r.table.set_index("entity")
    assert t.loc["B", "auc"] == pytest.approx(0.25)
    assert math.isnan(t.loc["C", "auc"]) and math.isnan(t.loc["D", "auc"])
    assert list(t["n_rows"]) == [2, 3, 2, 1] and list(t["n_pos"]) == [1, 2, 2, 0]


@pytest.mark.parametrize("weighted", [False, True])
def test_per_entity_auc_matches_sklearn_per_group(weighted):
    rng = np.random.default_rng(11)
    n = 3000
    entity = rng.integers(0, 80, n) * 7  # non-contiguous labels
    y = (rng.random(n) < rng.uniform(0.05, 0.95, 80)[entity // 7]).astype(int)
    s = rng.integers(0, 6, n).astype(float)  # heavy ties within entities
    w = rng.exponential(size=n) if weighted else None
    order = rng.permutation(n)  # rows in no particular order
    r = per_entity_auc(entity[order], y[order], s[order], None if w is None else w[order])
    ref, skipped = {}, 0
    for e in np.unique(entity):
        m = entity == e
        if len(set(y[m])) < 2:
            skipped += 1
            continue
        ref[e] = roc_auc_score(y[m], s[m], sample_weight=None if w is None else w[m])
    assert r.n_skipped_single_class == skipped
    got = r.table.set_index("entity")["auc"].dropna()
    np.testing.assert_allclose(got.loc[list(ref)].to_numpy(), list(ref.values()), atol=1e-12)
    assert r.mean == pytest.approx(np.mean(list(ref.values())), abs=1e-12)


def test_log_loss_matches_sklearn_and_clips():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, 500)
    y = (rng.random(500) < p).astype(int)
    w = rng.exponential(size=500)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p), abs=1e-12)
    assert log_loss(y, p, w) == pytest.approx(sk_log_loss(y, p, sample_weight=w), abs=1e-12)
    # p = 0 for a positive is clipped to eps: loss -log(eps) / 2 over two rows.
    assert log_loss([1, 0], [0.0, 0.0], eps=1e-6) == pytest.approx(-math.log(1e-6) / 2)
    with pytest.raises(ValueError, match=r"y_prob: probabilities must be in \[0, 1\]"):
        log_loss([1, 0], [1.5, 0.2])


def test_calibration_table_hand_computed():
    y = [0, 1, 0, 1, 1]
    p = [0.05, 0.15, 0.12, 0.95, 1.0]
    t = calibration_table(y, p, n_bins=10)
    assert len(t) == 10 and list(t["count"]) == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    row1, row9 = t.iloc[1], t.iloc[9]
    assert row1["mean_predicted"] == pytest.approx(0.135) and row1["observed_rate"] == 0.5
    assert row9["mean_predicted"] == pytest.approx(0.975) and row9["observed_rate"] == 1.0
    assert math.isnan(t.iloc[4]["observed_rate"])  # empty bin
    # Weights 1 and 3 in bin 1: mean p = (0.15 + 3 * 0.12) / 4, observed = 1 / 4.
    tw = calibration_table(y, p, sample_weight=[1, 1, 3, 1, 1], n_bins=10)
    assert tw.iloc[1]["mean_predicted"] == pytest.approx((0.15 + 0.36) / 4)
    assert tw.iloc[1]["observed_rate"] == pytest.approx(0.25)
    assert tw.iloc[1]["weight"] == 4.0


def test_calibration_table_quantile_bins_are_balanced():
    rng = np.random.default_rng(0)
    p = rng.beta(1, 5, 1000)
    t = calibration_table((rng.random(1000) < p).astype(int), p, n_bins=4, strategy="quantile")
    assert list(t["count"]) == [250, 250, 250, 250]
    assert t["count"].sum() == 1000
    with pytest.raises(ValueError, match="strategy"):
        calibration_table([0, 1], [0.1, 0.2], strategy="kmeans")


def _clustered(seed: int, n_entities: int = 40, rows: int = 6):
    """Rows grouped by entity, with ties; each entity has its own offset (correlated rows)."""
    rng = np.random.default_rng(seed)
    entity = np.repeat(np.arange(n_entities) * 7 + 3, rows)  # ids, not 0..n-1
    offset = np.repeat(rng.normal(size=n_entities), rows)
    y = (rng.random(entity.size) < 1 / (1 + np.exp(-offset))).astype(int)
    s = np.round(offset + y + rng.normal(size=entity.size), 1)  # rounded: ties
    return entity, y, s


@pytest.mark.parametrize("seed", range(3))
def test_entity_bootstrap_auc_is_the_weighted_auc_of_entity_resamples(seed):
    """Reference: every replicate drawn by hand (the same generator calls) and scored by `auc`
    with each row weighted by how often its entity was drawn."""
    entity, y, s = _clustered(seed)
    ids = np.unique(entity)
    res = entity_bootstrap_auc(entity, y, s, n_boot=50, seed=seed)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, ids.size, size=(50, ids.size))
    reps = []
    for d in draws:
        counts = np.bincount(d, minlength=ids.size)
        w = counts[np.searchsorted(ids, entity)]
        if (w * y).sum() > 0 and (w * (1 - y)).sum() > 0:
            reps.append(auc(y, s, sample_weight=w))
    low, high = percentile_interval(np.array(reps), 0.95)
    assert res.mean == pytest.approx(auc(y, s))
    assert (res.low, res.high) == pytest.approx((low, high), abs=1e-12)
    assert res.n == ids.size and res.n_boot == 50 and res.low < res.mean < res.high


def test_entity_bootstrap_auc_memory_chunks_change_nothing():
    entity, y, s = _clustered(5)
    whole = entity_bootstrap_auc(entity, y, s, n_boot=64, seed=1)
    chunked = entity_bootstrap_auc(entity, y, s, n_boot=64, seed=1, max_elements=500)
    assert (chunked.low, chunked.high) == pytest.approx((whole.low, whole.high), abs=1e-12)


def test_entity_bootstrap_auc_is_wider_than_a_row_bootstrap_when_rows_cluster():
    """An entity's own effect moves its labels and its scores together: which entities are
    drawn moves the AUC, a spread that resampling rows does not see."""
    rng = np.random.default_rng(0)
    entity = np.repeat(np.arange(30), 40)
    effect = np.repeat(rng.normal(scale=1.5, size=30), 40)
    y = (rng.random(entity.size) < 1 / (1 + np.exp(-effect))).astype(int)
    s = effect + rng.normal(size=entity.size)
    by_entity = entity_bootstrap_auc(entity, y, s, n_boot=300, seed=0)
    by_row = entity_bootstrap_auc(np.arange(entity.size), y, s, n_boot=300, seed=0)
    assert by_entity.high - by_entity.low > 1.5 * (by_row.high - by_row.low)


def test_entity_bootstrap_auc_errors():
    entity, y, s = _clustered(0)
    with pytest.raises(ValueError, match="both classes"):
        entity_bootstrap_auc(entity, np.zeros_like(y), s)
    with pytest.raises(ValueError, match="ci: must be in"):
        entity_bootstrap_auc(entity, y, s, ci=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        entity_bootstrap_auc(entity, y, s, n_boot=0)
    with pytest.raises(ValueError, match="one class only"):  # two entities, one class each
        entity_bootstrap_auc([1, 1, 2, 2], [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], n_boot=200)
