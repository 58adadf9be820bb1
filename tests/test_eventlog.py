from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from watchlog import EventLog, IdMap, UnknownIdError


def test_idmap_sorts_ids_and_round_trips(tmp_path):
    m = IdMap(["u3", "u1", "u2", "u1"], "learner_id")
    assert len(m) == 3
    assert m.to_index(["u1", "u3"]).tolist() == [0, 2]
    assert m.to_ids([2, 0]).tolist() == ["u3", "u1"]
    m.save(tmp_path / "ids.parquet")
    assert IdMap.load(tmp_path / "ids.parquet") == m


def test_idmap_unknown_ids_error_counts_and_examples():
    m = IdMap([1, 2, 3], "course_id")
    with pytest.raises(UnknownIdError, match=r"course_id: 2 of 4 ids are unknown.*7, 9"):
        m.to_index([1, 7, 9, 7])
    assert m.to_index([1, 7], strict=False).tolist() == [0, -1]
    with pytest.raises(IndexError, match=r"indices must be in \[0, 3\)"):
        m.to_ids([3])


def test_idmap_categorical_fast_path_matches_plain_lookup():
    ids = pd.Series(pd.Categorical(["b", "a", None, "c"], categories=["c", "b", "a", "z"]))
    m = IdMap(["a", "b", "c"])
    assert m.to_index(ids, strict=False).tolist() == [1, 0, -1, 2]


def test_eventlog_views_and_save_load(tmp_path, small_platform):
    log = small_platform.log
    ev = log.events
    # id columns agree with the maps, both ways
    assert (log.learner_ids.to_ids(ev["learner_idx"]) == ev["learner_id"].to_numpy()).all()
    assert (log.course_ids.to_ids(ev["course_idx"]) == ev["course_id"].to_numpy()).all()
    # time window is a contiguous, correct slice
    lo, hi = ev["ts"].iloc[100], ev["ts"].iloc[5000]
    win = log.time_window(lo, hi)
    assert ((win["ts"] >= lo) & (win["ts"] < hi)).all()
    assert len(win) == int(((ev["ts"] >= lo) & (ev["ts"] < hi)).sum())
    # interactions: learner x course CSR float32, repeated pairs summed
    X = log.interactions()
    assert X.shape == (log.n_learners, log.n_courses) and X.dtype == np.float32
    assert X.sum() == len(ev)
    # save -> load keeps content and fingerprint
    path = log.save(tmp_path / "log")
    again = EventLog.load(path)
    assert again.fingerprint() == log.fingerprint()
    assert again.learner_ids == log.learner_ids and again.course_ids == log.course_ids
    # saving again replaces atomically: no temp or old folders left behind
    log.save(tmp_path / "log")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_fingerprint_changes_with_content(small_platform):
    log = small_platform.log
    assert log.fingerprint() == log.with_events(log.events.copy()).fingerprint()
    assert log.fingerprint() != log.with_events(log.events.iloc[:-1]).fingerprint()


def test_select_kinds(small_platform):
    log = small_platform.log
    assert len(log.select("impressions")) == int(log.events["impression"].sum())
    with pytest.raises(ValueError, match="run cleaning.mark_watched"):
        log.select("watched")
    with pytest.raises(ValueError, match="must be 'all', 'watched' or 'impressions'"):
        log.select("clicks")
