"""What the export takes in besides the rows: watched pairs (their id kinds, pairs outside the
tables), the config stored in the manifest (no password), a CSV version read back whatever its
ids hold, and `export.json` after a failed publish."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from export import (
    CsvSink,
    GateConfig,
    GateError,
    ParquetSink,
    RowError,
    WatchedPairs,
    current_version,
    publish,
    read_manifest,
    read_version,
    redact_url,
    rows_checksum,
)
from tests.export_fakes import PROVENANCE

# ---- watched pairs --------------------------------------------------------------------------
# Two learners, each list holding a course the learner already watched (1 watched 10, 2: 11).
STR_LEARNERS, STR_COURSES = ["1", "2"], ["10", "11", "12"]
INT_LEARNERS, INT_COURSES = [1, 2], [10, 11, 12]
WATCHED = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], dtype=bool))


def frame(learners, courses) -> pd.DataFrame:
    """Learner i's list: course i (the one it watched), then course 12."""
    learner = pd.Series(np.repeat(learners, 2))
    course = pd.Series([courses[0], courses[2], courses[1], courses[2]])
    if isinstance(learners[0], str):
        learner = learner.astype("str")
    if isinstance(courses[0], str):
        course = course.astype("str")
    return pd.DataFrame({
        "learner_id": learner, "rank": np.tile([1, 2], 2).astype(np.int32), "course_id": course,
        "score": [1.0, 0.5, 1.0, 0.5], "source": pd.Series(["blend"] * 4, dtype="str"),
        "model_version": pd.Series(["v"] * 4, dtype="str"),
    })  # fmt: skip


def publish_with(root: Path, learners, courses, watched):
    return publish(
        frame(learners, courses), sink=ParquetSink(root), gates=GateConfig(k=2),
        learners=learners, catalogue=courses, watched=watched, manifest=PROVENANCE,
    )  # fmt: skip


def not_watched(results) -> dict:
    return next(r for r in results if r["name"] == "not_watched")


@pytest.mark.parametrize(
    ("tables", "watched", "message"),
    [
        # the audit's case: every pair used to be dropped and the gate passed on nothing
        ("str", WatchedPairs(WATCHED, INT_LEARNERS, INT_COURSES),
         r"watched.learner_ids: ids are integers \(e.g. \[1, 2\]\) but the learner table's "
         r"ids are strings"),
        ("int", WatchedPairs(WATCHED, STR_LEARNERS, STR_COURSES),  # was a bare TypeError
         r"watched.learner_ids: ids are strings \(e.g. \['1', '2'\]\) but the learner "
         r"table's ids are integers"),
        ("str", WatchedPairs(WATCHED, STR_LEARNERS, INT_COURSES),
         r"watched.course_ids: ids are integers .* but the catalogue's ids are strings"),
        ("int", pd.DataFrame({"learner_id": [1, 2], "course_id": pd.Series(["10", "11"],
                                                                          dtype="str")}),
         r"watched.course_id: ids are strings .* but the catalogue's ids are integers"),
        ("str", pd.DataFrame({"learner_id": pd.Series(["1", "2"], dtype="str"),
                              "course_id": [10, 11]}),
         r"watched.course_id: ids are integers .* but the catalogue's ids are strings"),
    ],
)  # fmt: skip
def test_watched_ids_of_another_kind_than_the_tables_raise(tmp_path, tables, watched, message):
    learners, courses = (STR_LEARNERS, STR_COURSES) if tables == "str" else (INT_LEARNERS,
                                                                             INT_COURSES)  # fmt: skip
    with pytest.raises(RowError, match=message):
        publish_with(tmp_path / "out", learners, courses, watched)
    assert not (tmp_path / "out" / "current").exists()


def test_watched_ids_of_the_tables_kind_are_checked(tmp_path):
    # the same pairs with string id maps: both lists hold a watched course
    with pytest.raises(GateError) as info:
        publish_with(
            tmp_path / "out", STR_LEARNERS, STR_COURSES,
            WatchedPairs(WATCHED, STR_LEARNERS, STR_COURSES),
        )  # fmt: skip
    gate = next(r for r in info.value.failed if r.name == "not_watched")
    assert gate.counts["watched_rows"] == 2
    assert gate.examples == [("1", "10"), ("2", "11")]


def test_watched_pairs_none_of_which_are_on_the_tables_raise(tmp_path):
    # same kind, other ids (e.g. another run's id maps): the gate would check nothing
    other = WatchedPairs(WATCHED, [7, 8], [70, 71, 72])
    with pytest.raises(ValueError, match="none of the 2 watched pairs is on the learner table"):
        publish_with(tmp_path / "out", INT_LEARNERS, INT_COURSES, other)
    assert not (tmp_path / "out" / "current").exists()


@pytest.mark.parametrize("form", ["pairs", "csr"])
def test_watched_pairs_outside_the_tables_are_counted_not_dropped_silently(tmp_path, form):
    # learner 1 watched 12 (checked: its rank 2), learner 9 is not in the learner table,
    # course 99 not in the catalogue: one pair each
    learners, courses = [1, 9, 2], [12, 99]
    m = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32))
    if form == "csr":
        watched = WatchedPairs(m, learners, courses)
    else:
        coo = m.tocoo()
        watched = pd.DataFrame({"learner_id": np.take(learners, coo.row),
                                "course_id": np.take(courses, coo.col)})  # fmt: skip
    with pytest.raises(GateError) as info:
        publish_with(tmp_path / "out", INT_LEARNERS, INT_COURSES, watched)
    gate = not_watched(info.value.manifest["gates"]["results"])
    assert gate["counts"] == {
        "watched_rows": 1,  # learner 1's rank 2
        "watched_pairs_given": 3,
        "pairs_unknown_learner": 1,
        "pairs_unknown_course": 1,
        "watched_pairs_checked": 1,
    }
    assert "pairs_unknown_learner 1" in str(info.value)


# ---- CSV read back --------------------------------------------------------------------------
def test_a_large_csv_version_with_newlines_in_ids_reads_back(tmp_path):
    # > 1 MiB (pyarrow's block): a quoted newline at a block boundary used to split a row
    n = 20_000
    ids = [f"learner\n{i:06d}" for i in range(n)]
    rows = pd.DataFrame({
        "learner_id": pd.Series(np.repeat(ids, 2), dtype="str"),
        "rank": np.tile([1, 2], n).astype(np.int64),
        "course_id": pd.Series(np.tile(["c\n1", "c\r\n2"], n), dtype="str"),
        "score": np.tile([1.0, 0.5], n),
        "source": pd.Series(["blend"] * (2 * n), dtype="str"),
        "model_version": pd.Series(["v"] * (2 * n), dtype="str"),
    })  # fmt: skip
    result = publish(
        rows, sink=CsvSink(tmp_path), gates=GateConfig(k=2), learners=ids,
        catalogue=["c\n1", "c\r\n2"], manifest=PROVENANCE,
    )  # fmt: skip
    version = current_version(tmp_path)
    assert (version / "part-00000.csv").stat().st_size > 1 << 20
    table = read_version(version)
    assert table.num_rows == 2 * n
    assert table.column("learner_id").to_pylist()[-2:] == [ids[-1]] * 2
    assert rows_checksum(table) == result.manifest["checksum"]["hex"]


# ---- the export stage: config in the manifest, export.json ---------------------------------
def tiny_run(run_dir: Path) -> SimpleNamespace:
    """A run folder with served lists (k=1, none watched) and its data's log."""
    from watchlog.cleaning import mark_watched
    from watchlog.eventlog import EventLog

    events = pd.DataFrame({
        "learner_id": [1, 1, 2, 3],
        "course_id": pd.Series(["x", "y", "z", "x"], dtype="str"),
        "ts": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"], utc=True),
        "watch_seconds": [400.0, 90.0, 100.0, 5.0],
        "clicked": [1, 1, 1, 0],
        "impression": [True, True, True, True],
    })  # fmt: skip
    log = mark_watched(EventLog.from_tables(events), min_seconds=60)
    (run_dir / "blend").mkdir(parents=True)
    pd.DataFrame({
        "learner_id": [1, 2, 3], "rank": np.ones(3, dtype=np.int32),
        "course_id": pd.Series(["z", "x", "y"], dtype="str"), "score": [1.0, 1.0, 1.0],
        "source": pd.Series(["blend"] * 3, dtype="str"),
    }).to_parquet(run_dir / "blend" / "ranked_lists.parquet", index=False)  # fmt: skip
    return SimpleNamespace(log=log)


def export_cfg(run_dir: Path, *overrides: str):
    from tests.pipeline_fakes import compose_cfg

    return compose_cfg(
        "export", f"run_dir={run_dir}", f"paths.output_dir={run_dir}", "export.gates.k=1",
        "export.gates.min_coverage=0", *overrides,
    )  # fmt: skip


def test_no_password_of_the_environments_url_reaches_the_manifest(tmp_path, monkeypatch):
    from experiments.export import export_run

    # the URL conf/export/default.yaml reads from the environment, resolved with the config
    monkeypatch.setenv("NCF_GLMIX_EXPORT_URL", "postgresql://u:s3cret@db.example/lists")
    run_dir = tmp_path / "run"
    data = tiny_run(run_dir)
    cfg = export_cfg(run_dir, f"export.sink.path={run_dir / 'lists'}")
    out = export_run(cfg, data, run_dir)
    assert out["published"]
    version = current_version(run_dir / "lists")
    stored = (version / "_manifest.json").read_text()
    assert "s3cret" not in stored
    assert "s3cret" not in (run_dir / "export.json").read_text()
    config = read_manifest(version)["config"]
    assert config["export"]["sink"]["url"] == "postgresql://u:***@db.example/lists"
    assert config["export"]["sink"]["path"] == str(run_dir / "lists")  # the rest as it was


def test_redact_urls_hides_passwords_anywhere_and_leaves_other_values():
    from export.manifest import redact_urls

    cfg = {
        "a": {"url": "postgresql://u:pw1@h/d", "plain": "https://example.com/x?y=1"},
        "b": ["sqlite:///x.db", "mysql://u@h/d?password=pw2", 3, None, "a://u:pw3@h b"],
    }
    got = redact_urls(cfg)
    assert not any(pw in json.dumps(got) for pw in ("pw1", "pw2", "pw3"))
    assert got["a"]["plain"] == "https://example.com/x?y=1"
    assert got["b"][:1] == ["sqlite:///x.db"] and got["b"][2:4] == [3, None]


def test_redact_url_hides_a_password_with_an_unencoded_at_sign():
    assert redact_url("postgresql://u:p@ss@h/db") == "postgresql://u:***@h/db"
    assert redact_url("postgresql+psycopg://u:a@b:c@h:5432/db?x=a@b") == (
        "postgresql+psycopg://u:***@h:5432/db?x=a%40b"
    )
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"  # no password: as is


def test_a_sink_error_replaces_an_earlier_success_in_export_json(tmp_path):
    import sqlite3

    from experiments.export import export_run
    from export import SinkError

    run_dir = tmp_path / "run"
    data = tiny_run(run_dir)
    ok = export_run(export_cfg(run_dir, f"export.sink.path={run_dir / 'lists'}"), data, run_dir)
    assert ok["published"] and json.loads((run_dir / "export.json").read_text())["published"]
    # a table of the export's name with other columns: the SQLite sink refuses to touch it
    db = tmp_path / "lists.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE recommendations (other INTEGER)")
    cfg = export_cfg(run_dir, "export.sink.kind=sqlite", f"export.sink.path={db}")
    with pytest.raises(SinkError) as info:
        export_run(cfg, data, run_dir)
    record = json.loads((run_dir / "export.json").read_text())
    assert record["published"] is False
    assert record["error"] == f"{type(info.value).__name__}: {info.value}"
    assert "version" not in record and "location" not in record  # nothing of the earlier run
    assert sorted(p.name for p in run_dir.iterdir()) == ["blend", "export.json", "lists"]
