from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from watchlog import DataReport, EventLog, SchemaError
from watchlog.cleaning import (
    CleaningConfig,
    clean,
    drop_duplicate_events,
    filter_min_activity,
    mark_watched,
    restrict_window,
)


def tiny_log(duplicates: str = "first") -> EventLog:
    courses = pd.DataFrame(
        {"course_id": ["x", "y", "z"], "duration_seconds": [1000.0, 100.0, np.nan]}
    )
    events = pd.DataFrame(
        {
            "learner_id": [1, 1, 1, 2, 2, 3],
            "course_id": ["x", "x", "y", "y", "z", "x"],
            "ts": pd.to_datetime(
                [
                    "2024-01-01",
                    "2024-01-01",
                    "2024-01-02",
                    "2024-01-03",
                    "2024-01-04",
                    "2024-01-05",
                ],
                utc=True,
            ),
            "watch_seconds": [20.0, 400.0, 60.0, 5.0, 90.0, np.nan],
            "clicked": [0, 1, 1, 1, None, 0],
            "impression": [True, True, True, True, False, True],
        }
    )
    return EventLog.from_tables(events, None, courses, duplicates=duplicates)


@pytest.mark.parametrize(
    ("policy", "watch", "clicked"),
    [("first", 20.0, 0), ("last", 400.0, 1), ("max_watch", 400.0, 1)],
)
def test_duplicate_policies(policy, watch, clicked):
    report = DataReport()
    out = drop_duplicate_events(tiny_log(), policy, report)
    assert len(out.events) == 5
    kept = out.events[(out.events["learner_id"] == 1) & (out.events["course_id"] == "x")]
    assert kept["watch_seconds"].tolist() == [watch] and kept["clicked"].tolist() == [clicked]
    step = report.steps[0]
    assert (step["rows_before"], step["rows_after"], step["rows_in_duplicate_groups"]) == (6, 5, 2)


def test_max_watch_keeps_any_click():
    log = tiny_log()
    ev = log.events.copy()
    ev.loc[ev["watch_seconds"] == 400.0, "clicked"] = 0
    ev.loc[ev["watch_seconds"] == 20.0, "clicked"] = 1
    out = drop_duplicate_events(log.with_events(ev), "max_watch")
    kept = out.events[(out.events["learner_id"] == 1) & (out.events["course_id"] == "x")]
    assert kept["watch_seconds"].tolist() == [400.0] and kept["clicked"].tolist() == [1]


def test_duplicate_error_policy_raises_with_examples():
    with pytest.raises(
        SchemaError, match=r"duplicate event \(set data\.cleaning\.duplicates.* -- 2 row"
    ):
        drop_duplicate_events(tiny_log(), "error")
    with pytest.raises(ValueError, match="policy must be one of"):
        drop_duplicate_events(tiny_log(), "average")


def test_watch_threshold_marks_and_drops_nothing():
    report = DataReport()
    out = mark_watched(tiny_log(), min_seconds=60, report=report)
    assert len(out.events) == 6
    assert out.events["watched"].tolist() == [False, True, True, False, True, False]
    step = report.steps[0]
    assert step["watched"] == 3 and step["below_threshold"] == 2 and step["missing_watch_time"] == 1


def test_watch_fraction_threshold_with_fallback():
    # fraction 0.5: x needs 500 s, y needs 50 s, z has no duration -> falls back to 60 s
    out = mark_watched(tiny_log(), min_seconds=60, min_fraction=0.5)
    assert out.events["watched"].tolist() == [False, False, True, False, True, False]
    with pytest.raises(ValueError, match="1 courses .* have no positive duration_seconds"):
        mark_watched(tiny_log(), min_seconds=None, min_fraction=0.5)


def test_zero_duration_falls_back_to_min_seconds_and_is_counted():
    log = tiny_log()
    courses = log.courses.assign(duration_seconds=[0.0, 100.0, np.nan])  # x: duration 0
    log = EventLog.from_tables(
        log.events[["learner_id", "course_id", "ts", "watch_seconds", "clicked", "impression"]],
        None,
        courses,
        duplicates="first",
    )
    report = DataReport()
    out = mark_watched(log, min_seconds=60, min_fraction=0.5, report=report)
    # x (duration 0): its 20 s watch against 60 s, not against 0 x 0.5 = 0 (any watch passes)
    assert out.events["watched"].tolist() == [False, True, True, False, True, False]
    assert report.steps[0]["min_seconds_for_no_duration"] == 4  # x's three events and z's one
    with pytest.raises(ValueError, match="2 courses .* no positive duration_seconds"):
        mark_watched(log, min_seconds=None, min_fraction=0.5)


def test_lookback_window_reports_both_sides():
    report = DataReport()
    out = restrict_window(tiny_log(), "2024-01-02", "2024-01-05", report)
    assert len(out.events) == 3
    step = report.steps[0]
    assert (step["before_start"], step["at_or_after_end"], step["removed"]) == (2, 1, 3)


def test_activity_filters_off_by_default_and_reported_when_on(small_platform):
    report = DataReport()
    cleaned = clean(small_platform.log, CleaningConfig(), report)
    assert len(cleaned.events) == len(small_platform.log.events)
    assert [s["step"] for s in report.steps] == ["duplicates", "watch_threshold"]

    report = DataReport()
    k = 3
    out = clean(
        small_platform.log,
        CleaningConfig(min_learner_watches=k, min_course_watches=k, iterate=True),
        report,
    )
    w = out.events[out.events["watched"]]
    # k-core: every remaining learner and course has >= k watches
    assert w.groupby("learner_idx").size().min() >= k
    assert w.groupby("course_idx").size().min() >= k
    # learners with events but no watches are removed too (fewer than k watches)
    assert set(out.events["learner_idx"]) == set(w["learner_idx"])
    step = report.steps[-1]
    assert (
        step["step"] == "min_activity"
        and step["rows_after"] == len(out.events)
        and step["learners_removed"] > 0
    )
    assert step["rounds"] >= 2


def test_filter_needs_watched_flag():
    with pytest.raises(ValueError, match="run mark_watched first"):
        filter_min_activity(tiny_log(), min_learner_watches=1)


def test_clean_lookback_counts_back_from_last_event(small_platform):
    report = DataReport()
    out = clean(small_platform.log, CleaningConfig(lookback_days=30), report)
    ts = out.events["ts"]
    assert ts.max() - ts.min() <= pd.Timedelta(days=30)
    assert report.steps[1]["step"] == "lookback_window"


def leak_log() -> EventLog:
    """Learner A has one watch before 2020-01-10 and one after; C has three before."""
    t = pd.Timestamp
    events = pd.DataFrame(
        {
            "learner_id": ["A", "A", "B", "C", "C", "C", "C"],
            "course_id": [1, 2, 1, 1, 2, 3, 1],
            "ts": [
                t(d, tz="UTC")
                for d in (
                    "2020-01-02",
                    "2020-01-25",
                    "2020-01-03",
                    "2020-01-04",
                    "2020-01-05",
                    "2020-01-12",
                    "2020-01-20",
                )
            ],  # fmt: skip
            "watch_seconds": 100.0,
            "clicked": 1,
            "impression": True,
        }
    )
    return EventLog.from_tables(events)


def test_activity_before_counts_only_earlier_watches_and_removes_later_events():
    report = DataReport()
    cfg = CleaningConfig(min_learner_watches=2, activity_before="2020-01-10")
    out = clean(leak_log(), cfg, report)
    # A has 1 watch before the cutoff: all of A's events go, the later one too; counted over
    # the whole log, A's later (validation) watch would have kept its training event.
    assert sorted(set(out.events["learner_id"])) == ["C"]
    assert len(out.events) == 4
    step = report.steps[-1]
    assert step["counted_before"] == "2020-01-10 00:00:00+00:00"
    assert (step["watches_counted"], step["watches_not_counted"]) == (4, 3)
    assert step["removed_at_or_after_before"] == 1  # A's 2020-01-25 event
    assert step["rows_before"] - step["rows_after"] == 3
    whole = clean(leak_log(), CleaningConfig(min_learner_watches=2))
    assert "A" in set(whole.events["learner_id"])  # the leak the setting closes


def test_data_stage_refuses_activity_counted_past_the_earliest_cutoff():
    from omegaconf import OmegaConf

    from experiments.data import check_activity_before
    from watchlog.splits import LeakageError, stratified_split, temporal_split

    log = mark_watched(leak_log())
    split = temporal_split(log, valid_start="2020-01-10", test_start="2020-01-20", end="2020-02-01")
    assert split.earliest_cutoff() == pd.Timestamp("2020-01-10", tz="UTC")

    def cfg(before):
        return OmegaConf.create(
            {"min_learner_watches": 2, "min_course_watches": 0, "activity_before": before}
        )

    for before in (None, "2020-01-11"):
        with pytest.raises(LeakageError, match=r"data.cleaning.activity_before=2020-01-10T00:00"):
            check_activity_before(cfg(before), split, DataReport())
    check_activity_before(cfg("2020-01-10"), split, DataReport())  # at the cutoff: fine
    off = OmegaConf.create({"min_learner_watches": 0, "min_course_watches": 0})
    check_activity_before(off, split, DataReport())  # filters off: nothing to check
    report = DataReport()
    check_activity_before(cfg(None), stratified_split(log, test_ratio=0.25), report)
    assert any("counted over all events" in n for n in report.notes)


def test_earliest_cutoff_includes_the_blend_models_validation_start():
    from watchlog.splits import temporal_split

    log = mark_watched(leak_log())
    split = temporal_split(
        log, blend_start="2020-01-05", valid_start="2020-01-12", test_start="2020-01-20",
        end="2020-02-01",
    )  # fmt: skip
    # the blend models validate on [blend start - validation length, blend start)
    assert split.earliest_cutoff() == pd.Timestamp("2020-01-05", tz="UTC") - pd.Timedelta(days=8)


def test_prepare_data_checks_activity_before_after_the_split():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from experiments.data import prepare_data
    from watchlog.splits import LeakageError

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            "pipeline", overrides=["data=synthetic_small", "data.cleaning.min_learner_watches=2"]
        )
    with pytest.raises(LeakageError, match=r"data.cleaning.activity_before is None"):
        prepare_data(cfg.data, cfg.split)


def test_k_core_runs_to_the_fixed_point_however_many_rounds():
    # a chain: learner i watches courses i and i + 1; with minimums 2 / 2 each round peels
    # the ends, so the k-core (empty) takes ~150 rounds, past any small cap
    n = 300
    learners = np.repeat(np.arange(n), 2)
    courses = learners + np.tile([0, 1], n)
    events = pd.DataFrame(
        {
            "learner_id": learners,
            "course_id": courses,
            "ts": pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(np.arange(2 * n), "s"),
            "watch_seconds": 100.0,
            "clicked": 1,
            "impression": True,
        }
    )
    report = DataReport()
    out = filter_min_activity(
        mark_watched(EventLog.from_tables(events)),
        min_learner_watches=2,
        min_course_watches=2,
        iterate=True,
        report=report,
    )
    assert len(out.events) == 0
    assert report.steps[-1]["rounds"] > 100 and report.steps[-1]["learners_removed"] == n
