"""Watch-time weights: definitions, counts, bad input, and the effect on the decision boundary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glmix import FixedEffect, watch_time_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def test_weights_per_kind_and_counts():
    clicked = pd.Series([0, 1, 1, 1, 1, 0], dtype="Int8")
    ws = np.array([0.0, 0.0, 60.0, 6000.0, np.nan, 30.0])
    dur = np.array([100.0, 100.0, 120.0, 3000.0, 100.0, 100.0])
    r = watch_time_weights(clicked, ws, min_watch_seconds=30)
    np.testing.assert_allclose(r.weights, [1, 1, 1 + np.log(2), 1 + np.log(101), 1, 1], rtol=1e-6)
    assert r.counts == {
        "rows": 6,
        "clicks": 4,
        "watched_clicks": 2,
        "clicks_without_watching": 1,
        "clicks_missing_watch_seconds": 1,
    }
    lin = watch_time_weights(clicked, ws, kind="capped_linear", scale=60, cap=10)
    np.testing.assert_allclose(lin.weights, [1, 1, 2, 10, 1, 1])
    assert lin.counts["capped"] == 1
    frac = watch_time_weights(clicked, ws, dur, kind="fraction", cap=5)
    np.testing.assert_allclose(frac.weights, [1, 1, 1 + 4 * 0.5, 5, 1, 1])
    assert frac.counts["capped"] == 1  # watched longer than the course: fraction 1
    assert (r.weights >= 1).all() and r.weights.dtype == np.float32


def test_watched_click_threshold_is_the_cleaning_one():
    from watchlog import EventLog
    from watchlog.cleaning import mark_watched

    events = pd.DataFrame(
        {
            "learner_id": [1, 1, 1],
            "course_id": [10, 11, 12],
            "ts": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"], utc=True),
            "watch_seconds": [59.0, 60.0, 61.0],
            "clicked": 1,
            "impression": True,
        }
    )
    watched = mark_watched(EventLog.from_tables(events), min_seconds=60).events["watched"]
    w = watch_time_weights(events["clicked"], events["watch_seconds"], min_watch_seconds=60)
    # a click on an event the cleaning marks watched (60 s: >= 60) is a watched click
    assert watched.tolist() == [False, True, True]
    assert (w.weights > 1).tolist() == [False, True, True]
    assert w.counts["watched_clicks"] == 2 and w.counts["clicks_without_watching"] == 1


def test_bad_input():
    with pytest.raises(ValueError, match="kind"):
        watch_time_weights([1], [1.0], kind="sqrt")
    with pytest.raises(ValueError, match="clicked: must be 0/1.*1 of 2"):
        watch_time_weights(pd.Series([1, None], dtype="Int8"), [1.0, 2.0])
    with pytest.raises(ValueError, match="watch_seconds: must be finite and >= 0"):
        watch_time_weights([1, 0], [-5.0, 0.0])
    with pytest.raises(ValueError, match="needs duration_seconds"):
        watch_time_weights([1], [5.0], kind="fraction")
    with pytest.raises(ValueError, match="length 2"):
        watch_time_weights([1, 0], [5.0])
    r = watch_time_weights([1, 1], [50.0, 50.0], [0.0, np.nan], kind="fraction")
    assert r.counts["watched_clicks_without_duration"] == 2 and (r.weights == 1).all()


@pytest.mark.parametrize("kind", ["log1p", "capped_linear", "fraction"])
def test_weighting_moves_the_boundary_toward_long_watched_clicks(kind):
    """The article's Figure 6: clicks watched briefly lie along one direction, clicks watched
    long along another. Weighting by watch time turns the boundary toward the long-watched
    clicks: more of them on the positive side, and they now outrank the briefly watched."""
    rng = np.random.default_rng(0)
    neg = rng.normal(0, 1, (3000, 2))
    short = rng.normal([1.5, 0.0], 0.7, (500, 2))  # clicked, watched 20 s
    long_ = rng.normal([0.0, 1.5], 0.7, (500, 2))  # clicked, watched 50 min
    X = np.vstack([neg, short, long_])
    y = np.r_[np.zeros(3000), np.ones(1000)]
    ws = np.r_[np.zeros(3000), np.full(500, 20.0), np.full(500, 3000.0)]
    w = watch_time_weights(y, ws, np.full(len(y), 3600.0), kind=kind).weights
    plain = FixedEffect(l2=1e-3).fit(X, y)
    weighted = FixedEffect(l2=1e-3).fit(X, y, w)
    z0, z1 = plain.decision_function(X), weighted.decision_function(X)
    is_short, is_long = slice(3000, 3500), slice(3500, 4000)
    assert (z1[is_long] > 0).mean() > (z0[is_long] > 0).mean() + 0.1
    gap0 = z0[is_long].mean() - z0[is_short].mean()  # ~0 unweighted: the setup is symmetric
    gap1 = z1[is_long].mean() - z1[is_short].mean()
    assert abs(gap0) < 0.2 and gap1 > gap0 + 0.5
    # the coefficient vector turns toward the long-watched direction (feature 2)
    assert weighted.coef_[1] / weighted.coef_[0] > 1.2 * plain.coef_[1] / plain.coef_[0]
