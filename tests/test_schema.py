"""Bad input: one table breaks every validation rule; each gets its own clear error, and a
valid table loses no row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from watchlog import DataReport, EventLog, SchemaError
from watchlog.eventlog import DUPLICATE_HINT


def valid_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    learners = pd.DataFrame(
        {"learner_id": ["a", "b", "c"], "segment": ["student", "enterprise", None]}
    )
    courses = pd.DataFrame(
        {
            "course_id": [10, 11, 12],
            "language": ["en", "es", "en"],
            "duration_seconds": [600.0, np.nan, 1200.0],
            "published_at": ["2023-01-01", None, "2023-06-01T12:00:00Z"],
        }
    )
    events = pd.DataFrame(
        {
            "learner_id": ["a", "a", "b", "c", "c"],
            "course_id": [10, 11, 10, 12, 12],
            "ts": [
                "2024-01-01 10:00",
                "2024-01-02",
                "2024-01-03T00:00:00+02:00",
                "2024-01-04",
                "2024-01-05",
            ],
            "watch_seconds": [30.0, np.nan, 0.0, 500.0, 12.5],
            "clicked": [1, None, 0, None, 1],
            "impression": [True, False, True, False, True],
            "position": [1, None, 3, None, 2],
        }
    )
    return events, learners, courses


def test_valid_tables_keep_every_row_and_normalize_dtypes():
    events, learners, courses = valid_tables()
    log = EventLog.from_tables(events, learners, courses)
    assert len(log.events) == len(events)
    ev = log.events
    assert str(ev["ts"].dtype) == "datetime64[ns, UTC]"
    assert ev["ts"].is_monotonic_increasing
    # "+02:00" is converted, naive times are taken as UTC.
    assert pd.Timestamp("2024-01-02 22:00", tz="UTC") in set(ev["ts"])
    assert ev["watch_seconds"].dtype == np.float32
    assert str(ev["clicked"].dtype) == "Int8"
    assert ev["clicked"].isna().sum() == 2
    assert ev["impression"].dtype == bool
    # learner segment None -> 'unknown'; indices follow sorted ids.
    assert list(log.learners["segment"].astype(str)) == ["student", "enterprise", "unknown"]
    assert list(ev.sort_values("ts")["learner_idx"]) == [0, 0, 1, 2, 2]
    assert log.courses["published_at"].isna().sum() == 1


def broken_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every rule broken at least once; the comment on each row says which."""
    events, learners, courses = valid_tables()
    learners = pd.concat(
        [
            learners,
            pd.DataFrame({"learner_id": [None, "b"], "segment": ["x", "y"]}),
        ],  # missing id; duplicate id
        ignore_index=True,
    )
    courses = pd.concat(
        [
            courses,
            pd.DataFrame(
                {
                    "course_id": [12, 13, 14],  # 12 duplicated
                    "language": ["en", "en", "en"],
                    "duration_seconds": [-5.0, "long", 10.0],  # negative; not numeric
                    "published_at": ["2023-01-01", "2023-01-01", "not a date"],  # unparseable
                }
            ),
        ],
        ignore_index=True,
    )
    bad = pd.DataFrame(
        {
            "learner_id": [None, "zz", "a", "a", "a", "a", "a", "a", "a", "a", "a", "a"],
            "course_id": [10, 10, 99, 10, 10, 10, 10, 10, 10, 10, 10, 10],
            "ts": [
                "2024-02-01",
                "2024-02-02",
                "2024-02-03",
                "yesterday",
                None,
                "2024-02-06",
                "2024-02-07",
                "2024-02-08",
                "2024-02-09",
                "2024-02-10",
                "2024-02-11",
                "2024-01-01 10:00",
            ],
            "watch_seconds": [1.0, 1.0, 1.0, 1.0, 1.0, -3.0, "abc", np.inf, 1.0, 1.0, 1.0, 30.0],
            "clicked": [0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 1],
            "impression": [
                True,
                True,
                True,
                True,
                True,
                True,
                True,
                True,
                True,
                False,
                "maybe",
                True,
            ],
            "position": [1, 1, 1, 1, 1, 1, 1, 1, 1, None, 0, 1],
        }
    )
    # row labels of `bad` rows: 0 missing learner, 1 unknown learner, 2 unknown course,
    # 3 unparseable ts, 4 missing ts, 5 negative watch, 6 non-numeric watch, 7 infinite watch,
    # 8 clicked=2, 9 clicked on organic (an error only with strict_clicked), 10 impression 'maybe' + position 0, 11 duplicate of event 0.
    return pd.concat([events, bad], ignore_index=True), learners, courses


EXPECTED = {
    ("learners", "learner_id", "id must not be missing", 1),
    ("learners", "learner_id", "id must be unique", 2),
    ("courses", "course_id", "id must be unique", 2),
    ("courses", "duration_seconds", "must be >= 0 (missing allowed)", 1),
    ("courses", "duration_seconds", "must be numeric (missing allowed)", 1),
    ("courses", "published_at", "timestamp must be parseable (years 1678-2261)", 1),
    ("events", "learner_id", "id must not be missing", 1),
    ("events", "learner_id", "id must exist in the learners table", 1),
    ("events", "course_id", "id must exist in the courses table", 1),
    ("events", "ts", "timestamp must be parseable (years 1678-2261)", 1),
    ("events", "ts", "timestamp must not be missing", 1),
    ("events", "watch_seconds", "must be >= 0 (missing allowed)", 1),
    ("events", "watch_seconds", "must be numeric (missing allowed)", 1),
    ("events", "watch_seconds", "must be finite (and below 3.4e38, float32's largest)", 1),
    ("events", "clicked", "must be 0 or 1 (missing allowed)", 1),
    ("events", "impression", "must be boolean (true/false or 1/0), not missing", 1),
    ("events", "position", "must be an integer in 1..32,767 (missing allowed)", 1),
    ("events", "learner_id+course_id+ts+impression", DUPLICATE_HINT, 2),
}


def test_every_broken_rule_is_reported_with_count_and_examples():
    events, learners, courses = broken_tables()
    with pytest.raises(SchemaError) as err:
        EventLog.from_tables(events, learners, courses)
    found = {(p.table, p.column, p.rule, p.count) for p in err.value.problems}
    assert found == EXPECTED
    by_rule = {(p.column, p.rule): p for p in err.value.problems}
    # Examples name the offending row and value.
    assert by_rule[("watch_seconds", "must be >= 0 (missing allowed)")].examples == [(10, -3.0)]
    assert by_rule[("ts", "timestamp must be parseable (years 1678-2261)")].examples == [
        (8, "yesterday")
    ]
    assert by_rule[("learner_id", "id must exist in the learners table")].examples == [(6, "zz")]
    message = str(err.value)
    assert f"{len(EXPECTED)} data problem(s)" in message
    assert "events.clicked: must be 0 or 1 (missing allowed) -- 1 row(s), e.g. row 13: 2" in message


def test_missing_required_columns_are_named():
    events, learners, courses = valid_tables()
    with pytest.raises(SchemaError) as err:
        EventLog.from_tables(events.drop(columns=["ts", "impression"]), learners, courses)
    assert {
        ("ts", "required column is missing"),
        ("impression", "required column is missing"),
    } <= err.value.rules()


def test_numeric_timestamps_need_a_unit():
    events, learners, courses = valid_tables()
    events = events.assign(ts=np.arange(5) * 86_400 + 1_700_000_000)
    with pytest.raises(SchemaError, match="give ts_unit"):
        EventLog.from_tables(events, learners, courses)
    log = EventLog.from_tables(events, learners, courses, ts_unit="s")
    assert log.events["ts"].iloc[0] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")


def test_duplicates_pass_validation_when_a_policy_will_resolve_them():
    events, learners, courses = valid_tables()
    doubled = pd.concat([events, events.iloc[[0]]], ignore_index=True)
    with pytest.raises(SchemaError, match="duplicate event"):
        EventLog.from_tables(doubled, learners, courses)
    log = EventLog.from_tables(doubled, learners, courses, duplicates="first")
    assert len(log.events) == len(doubled)  # left for cleaning.drop_duplicate_events, which reports


def test_missing_entity_tables_are_derived_and_noted():
    from watchlog import DataReport

    events, _, _ = valid_tables()
    report = DataReport()
    log = EventLog.from_tables(events, report=report)
    assert log.n_learners == 3 and log.n_courses == 3
    assert (log.learners["segment"] == "unknown").all()
    assert any("no learners table" in n for n in report.notes)
    assert any("no courses table" in n for n in report.notes)


def test_clicked_on_organic_events_becomes_missing_and_is_counted():
    events, learners, courses = valid_tables()
    organic = ~events["impression"].astype(bool)
    assert organic.sum() >= 2  # the fixture has organic events to test with
    events = events.assign(clicked=np.where(organic, 1, events["clicked"]))
    events.loc[organic.idxmax(), "clicked"] = 0  # one organic 0 as well
    report = DataReport()
    log = EventLog.from_tables(events, learners, courses, report=report)
    ev = log.events
    assert ev.loc[~ev["impression"], "clicked"].isna().all()
    # impressions keep their clicks
    assert ev.loc[ev["impression"], "clicked"].notna().all()
    (step,) = [s for s in report.steps if s["step"] == "clicked_on_organic_to_missing"]
    n = int(organic.sum())
    assert (step["set_missing"], step["were_1"], step["were_0"]) == (n, n - 1, 1)
    assert step["rows_before"] == step["rows_after"] == len(events)  # nothing dropped


def test_strict_clicked_keeps_the_error():
    events, learners, courses = valid_tables()
    organic = ~events["impression"].astype(bool)
    events = events.assign(clicked=np.where(organic, 1, events["clicked"]))
    with pytest.raises(SchemaError) as err:
        EventLog.from_tables(events, learners, courses, strict_clicked=True)
    (problem,) = err.value.problems
    assert problem.column == "clicked" and problem.count == int(organic.sum())
    assert "only defined on impressions" in problem.rule and "strict_clicked" in problem.rule


def test_out_of_range_values_and_settings_are_named_not_crashes():
    """A year pandas cannot hold in ns, a slate position beyond Int16, an events table
    without its id column and no entity tables, an unknown ts_unit: each a clear error."""
    events, learners, courses = valid_tables()
    far = events.astype({"ts": object})
    far.loc[far.index[0], "ts"] = "2300-01-01"
    with pytest.raises(SchemaError, match=r"events.ts: timestamp must be parseable \(years"):
        EventLog.from_tables(far, learners, courses)
    deep = events.assign(position=40_000)
    with pytest.raises(SchemaError, match=r"position: must be an integer in 1..32,767"):
        EventLog.from_tables(deep, learners, courses)
    with pytest.raises(SchemaError, match=r"learner_id: required column is missing.*Fix: map it"):
        EventLog.from_tables(events.drop(columns="learner_id"))
    with pytest.raises(ValueError, match=r"ts_unit \(data.source.ts_unit\): must be one of"):
        EventLog.from_tables(events, learners, courses, ts_unit="sec")


def test_nothing_the_caller_gave_is_changed_or_merged_silently():
    """Mixed text / number ids are an error (3 and "3" would be two learners, 3 and 3.0
    one); a column named like one the toolkit computes is an error; a watch time float32
    cannot hold is an error; a replaced `watched` column and missing segments are counted."""
    from watchlog.cleaning import mark_watched

    events, learners, courses = valid_tables()
    mixed = events.astype({"learner_id": object})
    mixed.loc[mixed.index[0], "learner_id"] = 3
    with pytest.raises(SchemaError, match=r"events.learner_id: ids must be all text or all numbers"
                                          r".*row 0: 3"):  # fmt: skip
        EventLog.from_tables(mixed, None, courses)
    with pytest.raises(SchemaError, match=r"learner_idx: column name is reserved"):
        EventLog.from_tables(events.assign(learner_idx=1), learners, courses)
    with pytest.raises(SchemaError, match=r"watch_seconds: must be finite \(and below 3.4e38"):
        EventLog.from_tables(events.assign(watch_seconds=1e39), learners, courses)
    report = DataReport()
    log = EventLog.from_tables(events.assign(watched=True), learners, courses, report=report)
    assert any("learners.segment: 1 of 3 missing, set to 'unknown'" in n for n in report.notes)
    mark_watched(log, min_seconds=60, report=report)
    assert any("events.watched: the column the events had was replaced" in n for n in report.notes)


def test_epochs_in_the_wrong_unit_are_noted_with_the_other_readings():
    events, learners, courses = valid_tables()
    seconds = events.assign(ts=np.arange(5) * 86_400 + 1_700_000_000)
    report = DataReport()
    log = EventLog.from_tables(seconds, learners, courses, ts_unit="ms", report=report)
    assert log.events["ts"].iloc[0].year == 1970
    (note,) = [n for n in report.notes if n.startswith("events.ts: read with ts_unit=ms")]
    assert "s: 2023-11-14" in note
    report = DataReport()
    EventLog.from_tables(seconds, learners, courses, ts_unit="s", report=report)
    assert not any(n.startswith("events.ts: read with") for n in report.notes)


def test_numeric_published_at_is_read_in_the_events_unit():
    events, learners, courses = valid_tables()
    ms = events.assign(ts=(np.arange(5) * 86_400 + 1_700_000_000) * 1000)
    released = courses.assign(published_at=1_600_000_000_000)  # epoch ms, as the events
    log = EventLog.from_tables(ms, learners, released, ts_unit="ms")
    assert (log.courses["published_at"].dt.year == 2020).all()
