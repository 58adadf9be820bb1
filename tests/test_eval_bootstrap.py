"""Bootstrap intervals, paired comparison and per-segment breakdowns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation import bootstrap_ci, paired_bootstrap, segment_breakdown


def test_interval_contains_true_mean_with_the_expected_width():
    rng = np.random.default_rng(0)
    values = rng.normal(2.0, 1.0, 2000)
    ci = bootstrap_ci(values, n_boot=2000, seed=1)
    assert ci.low < 2.0 < ci.high
    assert ci.low < ci.mean < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 / np.sqrt(2000), rel=0.15)


def test_bootstrap_is_seeded_and_independent_of_chunking():
    values = np.random.default_rng(1).exponential(size=500)
    a = bootstrap_ci(values, n_boot=300, seed=4, max_elements=700)  # 1 replicate per chunk
    b = bootstrap_ci(values, n_boot=300, seed=4)
    assert a == b
    assert bootstrap_ci(values, n_boot=300, seed=5) != a
    const = bootstrap_ci(np.full(10, 3.0), n_boot=50)
    assert const.low == const.high == 3.0


def test_interval_coverage_is_near_nominal():
    rng = np.random.default_rng(2)
    hits = sum(
        (c := bootstrap_ci(rng.exponential(size=200), n_boot=500, seed=i)).low < 1.0 < c.high
        for i in range(300)
    )
    assert 0.88 <= hits / 300 <= 0.99


def test_paired_bootstrap_hand_computed():
    # d = a - b = [1, 0, 0, -0.5]: one win, two ties, one loss; mean difference 0.125.
    r = paired_bootstrap([1, 0, 1, 0.5], [0, 0, 1, 1], n_boot=500)
    assert (r.user_win, r.user_tie, r.user_loss) == (0.25, 0.5, 0.25)
    assert r.mean_diff == pytest.approx(0.125)
    assert r.mean_a == pytest.approx(0.625) and r.mean_b == pytest.approx(0.5)
    assert r.low <= r.mean_diff <= r.high and 0.0 < r.win_rate < 1.0


def test_paired_bootstrap_clear_winner_and_identical_systems():
    b = np.random.default_rng(3).random(1000)
    better = paired_bootstrap(b + 0.1, b, n_boot=200)
    assert better.win_rate == 1.0 and better.user_win == 1.0
    assert better.low == pytest.approx(0.1) and better.high == pytest.approx(0.1)
    same = paired_bootstrap(b, b, n_boot=200)
    assert same.win_rate == 0.0 and same.user_tie == 1.0 and same.mean_diff == 0.0
    near = paired_bootstrap(b + 1e-9, b, n_boot=10, tie_tol=1e-6)
    assert near.user_tie == 1.0
    with pytest.raises(ValueError, match="lengths must match: a=1,000, b=999"):
        paired_bootstrap(b, b[1:])


def test_segment_breakdown_hand_computed():
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    seg = np.array(["a", "b", "a", "b", None], dtype=object)
    t = segment_breakdown(values, seg)
    assert list(t.columns) == ["segment", "users", "mean"]
    rows = {("nan" if pd.isna(s) else s): (u, m) for s, u, m in t.itertuples(index=False)}
    assert rows == {"a": (2, 2.0), "b": (2, 3.0), "nan": (1, 10.0)}


def test_segment_breakdown_many_metrics_with_intervals():
    rng = np.random.default_rng(4)
    seg = rng.choice(["new", "returning"], 600)
    per_user = {"ndcg@10": rng.random(600), "hr@10": (rng.random(600) < 0.3).astype(float)}
    t = segment_breakdown(per_user, seg, n_boot=200, seed=0)
    assert list(t.columns) == ["metric", "segment", "users", "mean", "low", "high"]
    assert len(t) == 4 and (t["low"] <= t["mean"]).all() and (t["mean"] <= t["high"]).all()
    ndcg_new = per_user["ndcg@10"][seg == "new"].mean()
    got = t[(t["metric"] == "ndcg@10") & (t["segment"] == "new")]["mean"].item()
    assert got == pytest.approx(ndcg_new)
    with pytest.raises(ValueError, match="lengths must match"):
        segment_breakdown(per_user["hr@10"], seg[:10])
    # NaN (a metric undefined for a user) is left out of that metric, inf raises
    gap = segment_breakdown(np.r_[np.nan, per_user["hr@10"][1:]], seg)
    first = gap[gap["segment"] == seg[0]]
    assert first["users"].item() == (seg == seg[0]).sum() - 1
    assert first["mean"].item() == pytest.approx(per_user["hr@10"][1:][seg[1:] == seg[0]].mean())
    with pytest.raises(ValueError, match="NaN/inf"):
        segment_breakdown(np.r_[np.inf, per_user["hr@10"][1:]], seg)
    # each segment its own stream of the seed: equal values, equal intervals in any metric
    twin = segment_breakdown({"a": per_user["ndcg@10"], "b": per_user["ndcg@10"]}, seg,
                             n_boot=200, seed=3)  # fmt: skip
    np.testing.assert_array_equal(twin[twin["metric"] == "a"][["low", "high"]].to_numpy(),
                                  twin[twin["metric"] == "b"][["low", "high"]].to_numpy())  # fmt: skip
    with pytest.raises(ValueError, match="need at least one value"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match=r"n_boot: must be a positive int; got True"):
        bootstrap_ci([1.0, 2.0], n_boot=True)  # a bool is no count (it failed inside numpy)
    # metrics in the mapping's order (as documented), segments sorted within each
    assert list(dict.fromkeys(t["metric"])) == ["ndcg@10", "hr@10"]
    assert t["segment"].tolist() == ["new", "returning"] * 2
