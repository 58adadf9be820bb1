"""The rows' checksum (any chunking gives the same digest, any change another one), version
names, provenance checks, password redaction."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from export import GateConfig, PostgresSink, publish, rows_checksum
from export.checksum import RowChecksum
from export.manifest import check_provenance, new_version, redact_url, to_json, to_jsonable
from export.synthetic import SyntheticLists


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pa.concat_tables(
        SyntheticLists(n_learners=40, k=4, n_courses=30, chunk_learners=7).chunks()
    )


def _digest(tables) -> str:
    check = RowChecksum(tables[0].schema)
    for t in tables:
        check.update(t)
    return check.hexdigest()


def test_the_digest_does_not_depend_on_chunking(table):
    whole = _digest([table.combine_chunks()])
    rng = np.random.default_rng(0)
    for _ in range(5):  # cuts anywhere, mid-learner and mid-run included
        cuts = np.sort(rng.choice(np.arange(1, table.num_rows), size=9, replace=False))
        bounds = np.r_[0, cuts, table.num_rows]
        parts = [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        assert _digest(parts) == whole
    assert _digest([table.slice(i, 1) for i in range(table.num_rows)]) == whole
    assert (
        rows_checksum(table) == whole == rows_checksum(table.to_pandas().pipe(pa.Table.from_pandas))
    )


def _changed(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(
        table.schema.get_field_index(column),
        column,
        pa.array(values, table.schema.field(column).type),
    )


def test_any_change_changes_the_digest(table):
    whole = rows_checksum(table)
    changes = [
        _changed(table, "score", 5, 0.123),
        _changed(table, "course_id", 0, 99_999),
        _changed(table, "rank", 3, 7),
        _changed(table, "learner_id", 4, 0),  # learner 1's first row joins learner 0's run
        _changed(table, "source", 9, "popular_segment"),
        _changed(table, "model_version", 159, "other"),  # the very last row
        table.take(np.r_[1, 0, np.arange(2, table.num_rows)]),  # two rows swapped
        table.slice(0, table.num_rows - 1),  # a row missing
    ]
    digests = {rows_checksum(t) for t in changes}
    assert whole not in digests and len(digests) == len(changes)


def test_string_ids_have_their_own_digest():
    data = SyntheticLists(n_learners=10, k=3, n_courses=20, string_ids=True, chunk_learners=4)
    table = pa.concat_tables(data.chunks())
    assert rows_checksum(table) == _digest(list(data.chunks()))
    assert rows_checksum(_changed(table, "course_id", 2, "C9999999")) != rows_checksum(table)


@pytest.mark.parametrize("string_ids", [False, True])
def test_rows_checksum_takes_pandas_frames_as_publish_does(string_ids):
    data = SyntheticLists(n_learners=10, k=3, n_courses=20, string_ids=string_ids)
    table = pa.concat_tables(data.chunks())
    frame = table.to_pandas()
    assert rows_checksum(frame) == rows_checksum(table)
    assert rows_checksum([frame.iloc[:7], frame.iloc[7:]]) == rows_checksum(table)


def test_versions_sort_by_time():
    a = new_version(dt.datetime(2026, 12, 1, 9, 5, 3, 7, tzinfo=dt.UTC))
    b = new_version(dt.datetime(2026, 12, 1, 10, 0, 0, 0, tzinfo=dt.UTC))
    assert a == "20261201T090503000007Z" and a < b and len(new_version()) == len(a)


def test_provenance_must_be_given_and_must_not_clash():
    check_provenance({"config": {}, "data_fingerprint": "f", "code_version": "c", "run": 1})
    with pytest.raises(ValueError, match=r"\['data_fingerprint'\] are missing"):
        check_provenance({"config": {}, "code_version": "c"})
    with pytest.raises(ValueError, match=r"keys \['checksum'\] are written by the export"):
        check_provenance(
            {"config": {}, "data_fingerprint": "f", "code_version": "c", "checksum": 1}
        )


@pytest.mark.parametrize("key", ["files", "table"])
def test_provenance_keys_the_sinks_write_are_refused(key):
    # the file sinks add `files` and the SQL sinks `table` at commit: a caller's value under
    # either key would be overwritten silently
    with pytest.raises(ValueError, match=rf"keys \['{key}'\] are written by the export"):
        check_provenance({"config": {}, "data_fingerprint": "f", "code_version": "c", key: 1})


def test_no_password_reaches_a_description():
    sink = PostgresSink("postgresql://svc:hunter2@db.internal:5432/recs?sslpassword=x2")
    text = f"{sink.describe()} {sink!r} {sink.where}"
    assert "hunter2" not in text and "x2" not in text and "svc:***@db.internal" in text
    assert redact_url("not a url") == "<unparseable URL>"


def test_non_finite_floats_are_written_as_null_and_the_json_is_strict():
    value = {"inf": float("inf"), "ninf": np.float64("-inf"), "nan": np.nan, "list": [np.inf, 1.5]}
    expected = {"inf": None, "ninf": None, "nan": None, "list": [None, 1.5]}
    assert to_jsonable(value) == expected
    text = to_json(value)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} written")) == expected
    check_provenance({"config": value, "data_fingerprint": "f", "code_version": "c"})


def test_timestamps_are_written_as_utc_iso_strings_and_nat_as_null():
    # naive = UTC (project rule); datetime64[ns] used to become a bare int and NaT 'NaT'
    value = {
        "ns": np.datetime64("2024-01-08T10:00:00.000000001"),
        "us": np.datetime64("2024-01-08T10:00:00.000000"),
        "naive": dt.datetime(2024, 1, 8, 10),
        "aware": dt.datetime(2024, 1, 8, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "pandas": pd.Timestamp("2024-01-08 10:00"),
        "nat": pd.NaT,
        "np_nat": np.datetime64("NaT"),
        "date": dt.date(2024, 1, 8),
        "ns_array": np.array(["2024-01-08T10:00", "NaT"], dtype="datetime64[ns]"),
        "day_array": np.array(["2024-01-02"], dtype="datetime64[D]"),
    }
    assert json.loads(to_json(value)) == {
        "ns": "2024-01-08T10:00:00.000000001+00:00",
        "us": "2024-01-08T10:00:00+00:00",
        "naive": "2024-01-08T10:00:00+00:00",
        "aware": "2024-01-08T10:00:00+00:00",
        "pandas": "2024-01-08T10:00:00+00:00",
        "nat": None,
        "np_nat": None,
        "date": "2024-01-08",
        "ns_array": ["2024-01-08T10:00:00+00:00", None],  # tolist() gave ints
        "day_array": ["2024-01-02T00:00:00+00:00"],  # as the scalar, not '2024-01-02'
    }


def test_a_provenance_value_that_is_not_json_fails_before_the_sink_opens(tmp_path):
    class Sink:
        kind, opened = "recording", False

        def describe(self):
            return {"kind": self.kind}

        def open(self, version, schema):  # pragma: no cover - must not be reached
            Sink.opened = True
            raise AssertionError("the sink was opened")

    data = SyntheticLists(n_learners=10, k=3, n_courses=20, chunk_learners=4)
    provenance = {"config": {"model": object()}, "data_fingerprint": "f", "code_version": "c"}
    with pytest.raises(ValueError, match="manifest: 'config' cannot be stored as JSON"):
        publish(
            data.chunks(),
            sink=Sink(),
            gates=GateConfig(k=3),
            learners=data.learner_ids,
            catalogue=data.course_ids,
            manifest=provenance,
        )
    assert not Sink.opened
