"""Parquet tables read by `load_tables`: what other writers (Spark, Polars, pyarrow) put in a
file loads as the same event log as a plain file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from watchlog import DataReport, SchemaError
from watchlog.idmap import IdMap
from watchlog.loaders import DataFileError, load_tables


def events_table() -> pa.Table:
    return pa.table(
        {
            "learner_id": pa.array(["b", "a", "c", "a"]),
            "course_id": pa.array(["y", "x", "x", "z"]),
            "ts": pa.array([1, 2, 3, 4], pa.timestamp("s", tz="UTC")),
            "watch_seconds": pa.array([1.0, 2.0, 3.0, 4.0]),
        }
    )


def test_dictionary_encoded_ids_give_the_same_ids_order_and_fingerprint(tmp_path):
    table = events_table()
    pq.write_table(table, tmp_path / "plain.parquet")
    encoded = table
    for i in (0, 1):  # dictionary order is first-seen order: b, a, c / y, x, z
        encoded = encoded.set_column(i, table.field(i).name, table.column(i).dictionary_encode())
    pq.write_table(encoded, tmp_path / "dict.parquet")
    plain, coded = (load_tables(tmp_path / f"{n}.parquet") for n in ("plain", "dict"))
    assert list(coded.learner_ids.index) == list(plain.learner_ids.index) == ["a", "b", "c"]
    assert list(coded.course_ids.index) == list(plain.course_ids.index) == ["x", "y", "z"]
    assert coded.fingerprint() == plain.fingerprint()


def test_idmap_of_categorical_ids_sorts_their_values():
    ids = pa.array([3, 1, 2]).dictionary_encode().to_pandas()
    assert list(IdMap(ids).index) == [1, 2, 3]
    with pytest.raises(ValueError, match="must not be missing"):
        IdMap(pa.array(["b", None]).dictionary_encode().to_pandas())


def test_repeated_column_names_are_an_error(tmp_path):
    table = events_table()
    table = table.append_column("ts", pa.array([9, 9, 9, 9], pa.timestamp("s", tz="UTC")))
    pq.write_table(table, tmp_path / "e.parquet")
    with pytest.raises(DataFileError, match=r"repeated: 'ts' \(2 times\)") as err:
        load_tables(tmp_path / "e.parquet")
    assert err.value.line is None


def float_ids_file(tmp_path: Path, ids: list[float | None]) -> Path:
    table = events_table().slice(0, len(ids))
    table = table.set_column(0, "learner_id", pa.array(ids, pa.float64()))
    pq.write_table(table, tmp_path / "fl.parquet")
    return tmp_path / "fl.parquet"


def test_whole_float_ids_match_integer_ids_of_a_csv_table(tmp_path):
    events = float_ids_file(tmp_path, [7.0, 8.0])
    (tmp_path / "l.csv").write_text("learner_id,segment\n7,x\n8,y\n")
    report = DataReport()
    log = load_tables(events, learners=tmp_path / "l.csv", report=report)
    assert list(log.learner_ids.index) == [7, 8]
    assert "events.learner_id: float ids, all whole numbers, read as integers" in report.notes


def test_float_ids_that_are_not_whole_are_named(tmp_path):
    with pytest.raises(SchemaError) as err:
        load_tables(float_ids_file(tmp_path, [7.0, 7.5, float("inf")]))
    (problem,) = err.value.problems
    assert problem.rule == "float ids must be whole numbers (read as integers)"
    assert (problem.source, problem.count, problem.examples[0]) == ("fl.parquet", 2, (1, 7.5))
    with pytest.raises(SchemaError, match="id must not be missing -- 1 row"):
        load_tables(float_ids_file(tmp_path, [7.0, None]))


def test_a_parquet_dataset_folder_loads_like_one_file(tmp_path):
    table = events_table()
    pq.write_table(table, tmp_path / "one.parquet")
    folder = tmp_path / "events.parquet"  # as Spark writes it: part files and a marker
    folder.mkdir()
    pq.write_table(table.slice(0, 2), folder / "part-00000.parquet")
    pq.write_table(table.slice(2), folder / "part-00001.parquet")
    (folder / "_SUCCESS").touch()
    log = load_tables(folder)
    assert log.fingerprint() == load_tables(tmp_path / "one.parquet").fingerprint()
    (tmp_path / "empty.parquet").mkdir()
    with pytest.raises(DataFileError, match="a folder without Parquet part files"):
        load_tables(tmp_path / "empty.parquet")
    pq.write_table(pa.table({"learner_id": ["a"]}), folder / "learners.parquet")
    with pytest.raises(DataFileError, match="part files with other columns"):
        load_tables(folder)
    (tmp_path / "events.csv").mkdir()
    with pytest.raises(DataFileError, match="is a folder"):
        load_tables(tmp_path / "events.csv")
