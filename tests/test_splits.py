from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from watchlog import DataReport, EventLog
from watchlog.cleaning import clean
from watchlog.splits import (
    Fold,
    LeakageError,
    assert_no_leakage,
    leave_latest_out,
    random_split,
    rolling_folds,
    stratified_split,
    temporal_split,
)


@pytest.fixture(scope="module")
def log(small_platform):
    return clean(small_platform.log)


def test_temporal_split_windows(log):
    report = DataReport()
    split = temporal_split(log, valid_days=30, test_days=30, report=report)
    v, t = split.valid, split.test
    for fold in split.folds():
        assert_no_leakage(fold)
        assert fold.cutoff == fold.cutoff.floor("D")  # day boundaries
    assert t.cutoff - v.cutoff == pd.Timedelta(days=30)
    assert v.label_end == t.cutoff
    # test inputs = valid inputs + valid labels; windows partition the log
    assert len(t.inputs) == len(v.inputs) + len(v.labels)
    assert len(t.inputs) + len(t.labels) == len(log.events)
    assert set(report.splits) == {"valid", "test"}
    assert report.splits["test"]["label_events"] == len(t.labels)


def test_lookback_restricts_inputs(log):
    fold = temporal_split(log, test_days=30).test
    recent = fold.lookback(60)
    assert recent["ts"].min() >= fold.cutoff - pd.Timedelta(days=60)
    assert len(recent) == int((fold.inputs["ts"] >= fold.cutoff - pd.Timedelta(days=60)).sum())
    assert fold.lookback(None) is fold.inputs


def test_temporal_split_rejects_bad_cutoffs(log):
    with pytest.raises(ValueError, match="give test_start or test_days"):
        temporal_split(log)
    with pytest.raises(ValueError, match="valid_start .* < test_start"):
        temporal_split(log, valid_start="2024-06-01", test_start="2024-05-01")
    with pytest.raises(ValueError, match="first event"):
        temporal_split(log, test_start="2020-01-01")


def test_leakage_is_detected(log):
    fold = temporal_split(log, test_days=30).test
    leaky = Fold(
        "test",
        "temporal",
        pd.concat([fold.inputs, fold.labels.iloc[:3]]),
        fold.labels,
        fold.cutoff,
        fold.label_end,
    )
    with pytest.raises(LeakageError, match="3 input events at or after the cutoff"):
        assert_no_leakage(leaky)
    lo = leave_latest_out(log, log.select("watched")).test
    swapped = Fold("test", "per_learner", lo.inputs, pd.concat([lo.labels, lo.inputs.iloc[:2]]))
    with pytest.raises(LeakageError, match="not after all of their learner's inputs"):
        assert_no_leakage(swapped)
    rs = random_split(log, log.select("watched"), test_ratio=0.2).test
    shared = Fold("test", "random", rs.inputs, pd.concat([rs.labels, rs.inputs.iloc[:4]]))
    with pytest.raises(LeakageError, match="4 rows"):
        assert_no_leakage(shared)


def test_rolling_folds(log):
    before = temporal_split(log, valid_days=30, test_days=30).valid.cutoff
    folds = rolling_folds(log, before=before, n_cutoffs=3, horizon_days=20, spacing_days=10)
    assert [f.cutoff for f in folds] == [before - pd.Timedelta(days=20 + 10 * k) for k in range(3)]
    for f in folds:
        assert f.labels["ts"].max() < before
    with pytest.raises(ValueError, match="not after the first event"):
        rolling_folds(log, before=before, n_cutoffs=100, horizon_days=30)


def test_leave_latest_out_takes_each_learners_latest(log):
    w = log.select("watched")
    report = DataReport()
    split = leave_latest_out(log, w, report=report)
    counts = w.groupby("learner_idx").size()
    assert split.test.labels["learner_idx"].is_unique
    assert len(split.test.labels) == int((counts >= 2).sum())
    assert len(split.valid.labels) == int((counts >= 3).sum())
    # the test label is the learner's latest event (max position in the time-sorted log)
    latest = w.reset_index().groupby("learner_idx")["index"].max()
    got = split.test.labels.reset_index().set_index("learner_idx")["index"]
    assert (latest.loc[got.index] == got).all()
    assert split.params["learners_without_test"] == int((counts == 1).sum())
    # nothing is lost: inputs + labels = all rows
    assert len(split.test.inputs) + len(split.test.labels) == len(w)


def test_leave_latest_out_breaks_timestamp_ties_by_position_when_told():
    from watchlog import EventLog

    ts = pd.Timestamp("2024-01-01", tz="UTC")
    events = pd.DataFrame(
        {
            "learner_id": [1, 1, 1],
            "course_id": ["a", "b", "c"],
            "ts": [ts, ts, ts],
            "watch_seconds": [100.0] * 3,
            "clicked": [None] * 3,
            "impression": [False] * 3,
        }
    )
    log = EventLog.from_tables(events)
    with pytest.raises(ValueError, match=r"ties in time decide the labels of 1 learners' test"):
        leave_latest_out(log)  # the default: a stated rule or an error, never file order unseen
    with pytest.raises(ValueError) as err:
        leave_latest_out(log)
    assert "(e.g. learner 1 (3 events at its latest timestamp))" in str(err.value)  # not np.int
    split = leave_latest_out(log, ties="order")
    assert split.test.labels["course_id"].tolist() == ["c"]
    assert split.valid.labels["course_id"].tolist() == ["b"]
    assert split.params["learners_with_tied_test_label"] == 1


def _recommenders_rule(learner: np.ndarray, key: np.ndarray, ratio: float) -> np.ndarray:
    """Reference, per learner in a Python loop: sort by key, rank r of n is test when r/n > ratio."""
    out = np.zeros(len(learner), dtype=bool)
    for u in np.unique(learner):
        rows = np.flatnonzero(learner == u)
        rows = rows[np.argsort(key[rows], kind="stable")]
        ranks = np.arange(1, len(rows) + 1) / len(rows)
        out[rows] = ranks > ratio
    return out


def test_stratified_split_draws_keep_the_rule_and_differ_in_rounding(log):
    """draw="ours": r / n <= 0.75 kept (floor); draw="recommenders": round(0.75 n) half-to-even
    kept (the library's draw, checked pair for pair in test_stratify.py)."""
    from watchlog.splits import _stratify

    rng = np.random.default_rng(0)
    learner = rng.integers(0, 50, 2000)
    key = rng.random(2000)
    np.testing.assert_array_equal(
        _stratify(learner, key, 0.75), _recommenders_rule(learner, key, 0.75)
    )

    w = log.select("watched")
    pairs = w.drop_duplicates(["learner_idx", "course_idx"]).groupby("learner_idx").size()
    for draw, kept in (
        ("ours", np.floor(0.75 * pairs + 1e-9)),
        ("recommenders", np.round(0.75 * pairs)),
    ):
        a = stratified_split(log, w, test_ratio=0.25, seed=42, draw=draw)
        b = stratified_split(log, w, test_ratio=0.25, seed=42, draw=draw)
        pd.testing.assert_index_equal(a.test.labels.index, b.test.labels.index)
        assert a.valid is None
        train = (
            a.test.inputs.drop_duplicates(["learner_idx", "course_idx"])
            .groupby("learner_idx")
            .size()
        )
        np.testing.assert_array_equal(train.reindex(pairs.index, fill_value=0), kept)
    assert not np.array_equal(np.floor(0.75 * pairs + 1e-9), np.round(0.75 * pairs))


@pytest.mark.parametrize("draw", ["recommenders", "ours"])
@pytest.mark.parametrize("by", ["learner", "course"])
def test_stratified_split_with_validation_and_whole_pairs(log, draw, by):
    w = log.select("all")  # repeated (learner, course) pairs exist among all events
    split = stratified_split(log, w, test_ratio=0.25, valid_ratio=0.2, seed=1, draw=draw, by=by)
    for fold in split.folds():
        assert_no_leakage(fold)
    assert len(split.valid.inputs) + len(split.valid.labels) == len(split.test.inputs)
    assert split.params["draw"] == draw and split.params["by"] == by


def test_random_split_ratio_and_seed(log):
    w = log.select("watched")
    split = random_split(log, w, test_ratio=0.2, valid_ratio=0.1, seed=3)
    n_pairs = len(w.drop_duplicates(["learner_idx", "course_idx"]))
    test_pairs = len(split.test.labels.drop_duplicates(["learner_idx", "course_idx"]))
    assert abs(test_pairs / n_pairs - 0.2) < 0.03
    other = random_split(log, w, test_ratio=0.2, valid_ratio=0.1, seed=4)
    assert not split.test.labels.index.equals(other.test.labels.index)
    with pytest.raises(ValueError, match="test_ratio"):
        random_split(log, w, test_ratio=1.2)


def test_temporal_split_with_a_blend_window_before_validation(log):
    report = DataReport()
    split = temporal_split(log, valid_days=20, test_days=20, blend_days=20, report=report)
    b, v, t = split.blend, split.valid, split.test
    assert [f.name for f in split.folds()] == ["blend", "valid", "test"]
    for fold in split.folds():
        assert_no_leakage(fold)
    # train -> blend -> valid -> test, contiguous windows of the asked lengths
    assert b.label_end == v.cutoff and v.cutoff - b.cutoff == pd.Timedelta(days=20)
    assert len(v.inputs) == len(b.inputs) + len(b.labels)
    assert split.params["blend_start"] == b.cutoff
    assert set(report.splits) == {"blend", "valid", "test"}
    # the model folds are the same as without the blend window
    plain = temporal_split(log, valid_days=20, test_days=20)
    assert plain.valid.inputs.index.equals(v.inputs.index)
    assert plain.test.labels.index.equals(t.labels.index)


def test_blend_models_split_sees_nothing_from_the_blend_window_on(log):
    split = temporal_split(log, valid_days=20, test_days=20, blend_days=20)
    shifted = split.for_blend_models()
    assert shifted.test.cutoff == split.blend.cutoff
    assert shifted.test.label_end == split.valid.cutoff
    assert shifted.test.labels.index.equals(split.blend.labels.index)
    assert shifted.valid.label_end == split.blend.cutoff
    assert shifted.test.cutoff - shifted.valid.cutoff == pd.Timedelta(days=20)
    # everything a model may train on or be refitted on is before the blend start
    for fold in shifted.folds():
        assert_no_leakage(fold)
        assert fold.inputs["ts"].max() < split.blend.cutoff
    assert shifted.valid.labels["ts"].max() < split.blend.cutoff
    # its params describe its own windows, as temporal_split gives them for those cutoffs
    same = temporal_split(
        log,
        split.valid.inputs,
        valid_start=shifted.valid.cutoff,
        test_start=shifted.test.cutoff,
        end=shifted.test.label_end,
    )
    assert {k: shifted.params[k] for k in same.params} == {
        **same.params,
        # every event from the validation start on is after the shifted end
        "events_after_end": len(log.events) - len(split.valid.inputs),
    }
    assert shifted.params["shifted_to"] == "blend"


def test_blend_window_needs_validation_and_room(log):
    with pytest.raises(ValueError, match="blend window needs a validation window"):
        temporal_split(log, test_days=20, blend_days=20)
    with pytest.raises(ValueError, match="blend_start"):
        temporal_split(log, valid_days=20, test_days=20, blend_days=10_000)
    with pytest.raises(ValueError, match="needs a temporal split with blend"):
        temporal_split(log, valid_days=20, test_days=20).for_blend_models()


def test_data_too_short_for_the_rolling_cutoffs_is_refused_before_training(small_platform):
    """300 days, 60-day windows: the blend models' cutoffs reach before the first event;
    the check says how far, and which settings fix it. Shorter windows pass."""
    from experiments.data import check_rolling_history

    log = clean(small_platform.log)
    settings = {"training": "auto", "n_cutoffs": 4, "horizon_days": None, "spacing_days": 14}
    long = temporal_split(log, valid_days=60, test_days=60, blend_days=60)
    check_rolling_history(long, **settings)  # the main models' cutoffs fit
    with pytest.raises(ValueError, match=r"need 102 days of events before the blend models'.*"
                                         r"ncf.datamodule.n_cutoffs"):  # fmt: skip
        check_rolling_history(long, **settings, blend_models=True)
    check_rolling_history(long, **{**settings, "training": "denoising"}, blend_models=True)
    short = temporal_split(log, valid_days=20, test_days=20, blend_days=20)
    check_rolling_history(short, **settings, blend_models=True)


def test_a_window_without_events_is_refused_with_the_data_span(small_platform):
    log = clean(small_platform.log)
    last = log.events["ts"].iloc[-1]
    with pytest.raises(
        ValueError, match=r"no events in the window\(s\) valid \[.*, test \[.*split.fn.end"
    ):
        temporal_split(log, valid_days=20, test_days=20, end=last + pd.Timedelta(days=60))


def test_leave_latest_random_ties_do_not_depend_on_the_input_row_order():
    rng = np.random.default_rng(0)
    n = 400
    events = pd.DataFrame(
        {
            "learner_id": rng.integers(0, 40, n),
            "course_id": rng.integers(0, 200, n),
            # five distinct days: most learners' latest events are tied in time
            "ts": pd.Timestamp("2020-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 5, n), unit="D"),
            "watch_seconds": 100.0,
            "clicked": 1,
            "impression": True,
        }
    ).drop_duplicates(["learner_id", "course_id", "ts"])

    def labels(df):
        split = leave_latest_out(EventLog.from_tables(df), n_test=1, n_valid=1, ties="random")
        assert split.params["learners_with_tied_test_label"] > 10  # the draw decides many
        return [
            set(zip(f.labels["learner_id"], f.labels["course_id"], f.labels["ts"], strict=True))
            for f in (split.valid, split.test)
        ]

    shuffled = events.sample(frac=1, random_state=1).reset_index(drop=True)
    assert labels(events) == labels(shuffled)


def test_stratified_valid_ratio_that_rounds_to_no_validation_pair_is_an_error():
    rng = np.random.default_rng(0)
    learners = np.repeat(np.arange(200), 4)  # 4 pairs each: 3 training pairs after the test
    courses = np.concatenate([rng.choice(50, 4, replace=False) for _ in range(200)])
    events = pd.DataFrame(
        {
            "learner_id": learners,
            "course_id": courses,
            "ts": pd.Timestamp("2020-01-01", tz="UTC")
            + pd.to_timedelta(np.arange(len(learners)), "min"),
            "watch_seconds": 100.0,
            "clicked": 1,
            "impression": True,
        }
    )
    log = clean(EventLog.from_tables(events))
    # round(0.9 x 3) = 3 of 3 training pairs stay training for every learner
    with pytest.raises(
        ValueError,
        match=r"valid_ratio=0.1 gives no validation pair: round\(\(1 - valid_ratio\) x n\).*"
        r"200 with 3 training pairs",
    ):
        stratified_split(log, test_ratio=0.25, valid_ratio=0.1, seed=1)
    split = stratified_split(log, test_ratio=0.25, valid_ratio=0.2, seed=1)  # round(2.4) = 2
    assert split.valid is not None and len(split.valid.labels) == 200
    assert stratified_split(log, test_ratio=0.25, valid_ratio=0.0, seed=1).valid is None
