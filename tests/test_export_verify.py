"""Verifying a published version against its manifest's checksum: the row order the digest
was taken over (`checksum.order`), SQL versions read back ORDER BY learner_id, rank (SQLite
and a real PostgreSQL), file versions read back in their own order."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from export import (
    COLUMNS,
    ChecksumError,
    GateConfig,
    ParquetSink,
    PostgresSink,
    SqliteSink,
    publish,
    read_sql_version,
    rows_checksum,
    verify_sql_version,
)
from export.checksum import RowOrder
from tests.export_fakes import PROVENANCE, lists, run

# Sorted by UTF-8 bytes: upper case, then "_", then lower case, then non-ASCII; a locale's
# collation (en_US, ICU) would interleave the cases and put "_z" first.
SORTED = ["A", "B", "_z", "a", "b", "é", "日本"]
COURSES = ["c1", "c2", "c3"]


def frame(learners: list[str], fallback: tuple[str, ...] = ()) -> pd.DataFrame:
    """Two rows per learner in the given order; `fallback` learners' rows come from a fallback
    source (two labels: PostgreSQL's COPY encoder loads rows grouped by label)."""
    rows = [
        (lid, r, COURSES[r - 1], 2.0 - r, "popular_global" if lid in fallback else "blend", "m1")
        for lid in learners
        for r in (1, 2)
    ]
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    return out.astype({c: "string" for c in ("learner_id", "course_id", "source", "model_version")})


def publish_frame(rows, sink):
    return publish(
        rows, sink=sink, gates=GateConfig(k=2), learners=SORTED, catalogue=COURSES,
        manifest=PROVENANCE,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_sink(request, tmp_path):
    """A factory of sinks on one database and table: SQLite file or the throwaway server."""
    table = f"t{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        return lambda **kw: SqliteSink(tmp_path / "lists.db", table=table, **kw)
    url = request.getfixturevalue("postgres_url")
    return lambda **kw: PostgresSink(url, table=table, **kw)


def test_learners_in_id_order_give_a_checksum_a_sql_reader_verifies(sql_sink):
    # string ids in byte order, sources mixed so PostgreSQL's COPY groups rows by label
    rows = frame(SORTED, fallback=("B", "a", "日本"))
    result = publish_frame(rows, sql_sink())
    assert result.manifest["checksum"]["order"] == "learner_id, rank"
    table, manifest = read_sql_version(sql_sink())
    assert table.column("learner_id").to_pylist() == list(np.repeat(SORTED, 2))
    assert rows_checksum(table) == result.manifest["checksum"]["hex"] == rows_checksum(rows)
    assert verify_sql_version(sql_sink())["version"] == result.version == manifest["version"]


def test_learners_out_of_id_order_cannot_be_verified_from_a_sql_table(sql_sink):
    shuffled = ["b", "A", "日本", "_z", "é", "a", "B"]
    result = publish_frame(frame(shuffled, fallback=("A",)), sql_sink())
    assert result.manifest["checksum"]["order"] == "publish"
    table, _ = read_sql_version(sql_sink())  # still readable, ordered by learner_id, rank
    assert table.column("learner_id").to_pylist()[::2] == SORTED
    with pytest.raises(ChecksumError, match="a SQL table keeps no row order to verify against"):
        verify_sql_version(sql_sink())


def test_a_changed_row_fails_verification_and_archived_versions_verify(sql_sink, tmp_path):
    first = publish_frame(frame(SORTED), sql_sink(keep_versions=2))
    second = publish_frame(frame(SORTED, fallback=("A",)), sql_sink(keep_versions=2))
    assert verify_sql_version(sql_sink(), version=first.version)["version"] == first.version
    assert verify_sql_version(sql_sink())["version"] == second.version
    sink = sql_sink()
    if isinstance(sink, SqliteSink):
        import sqlite3

        with sqlite3.connect(sink.file) as con:
            con.execute(f'UPDATE "{sink.names.live}" SET score = 0.5 WHERE rank = 2')
    else:
        import psycopg

        with psycopg.connect(sink.url, autocommit=True) as con:
            con.execute(f'UPDATE "{sink.names.live}" SET score = 0.5 WHERE rank = 2')
    with pytest.raises(ChecksumError, match="do not match the manifest's checksum"):
        verify_sql_version(sink)
    with pytest.raises(LookupError, match="is not stored"):
        verify_sql_version(sink, version="20000101T000000000000Z")


def test_the_file_sinks_record_the_order_and_verify_in_either(tmp_path):
    shuffled = ["b", "A", "日本", "_z", "é", "a", "B"]
    result = publish_frame(frame(shuffled), ParquetSink(tmp_path / "lists"))
    assert result.manifest["checksum"]["order"] == "publish"
    assert rows_checksum(pd.read_parquet(result.location)) == result.manifest["checksum"]["hex"]
    data = lists()  # integer ids 0..79 in order, over three chunks
    assert run(data, ParquetSink(tmp_path / "ints")).manifest["checksum"]["order"] == (
        "learner_id, rank"
    )


def _order(chunks) -> RowOrder:
    order = RowOrder()
    for ids, rank in chunks:
        ids = pa.array(ids)
        starts = np.flatnonzero(np.r_[True, np.array(ids.to_pylist()[1:]) != ids.to_pylist()[:-1]])
        order.update(ids, starts, np.asarray(rank, dtype=np.int32))
    return order


@pytest.mark.parametrize(
    ("chunks", "canonical"),
    [
        ([([1, 1, 2, 2], [1, 2, 1, 2]), ([10, 10], [1, 2])], True),
        ([([2, 10], [1, 1])], True),  # integers by value, not as text
        ([([1, 1, 10], [1, 2, 1]), ([2], [1])], False),  # across the chunk boundary
        ([([3, 3, 1, 1], [1, 2, 1, 2])], False),
        ([([1, 1, 2, 2], [2, 1, 1, 2])], False),  # a learner's ranks descending
        ([([1, 1], [1, 1])], False),  # tied ranks: no defined order
        ([(["B", "_", "a", "é"], [1, 1, 1, 1])], True),  # strings by UTF-8 bytes
        ([(["a", "B"], [1, 1])], False),
    ],
)
def test_row_order_is_canonical_only_for_ascending_ids_and_ranks(chunks, canonical):
    order = _order(chunks)
    assert order.canonical is canonical
    assert order.order == ("learner_id, rank" if canonical else "publish")
    assert (order.reason is None) is canonical


def test_a_utf16_sqlite_database_orders_string_ids_by_code_point(tmp_path):
    """BINARY compares a UTF-16 database's bytes: "ā" (U+0101) came before "a"."""
    import sqlite3

    path = tmp_path / "lists.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA encoding = 'UTF-16le'")
    con.execute("CREATE TABLE keep (x)")  # the pragma takes effect with the first table
    con.close()
    result = publish_frame(frame(SORTED), SqliteSink(path))
    table, _ = read_sql_version(SqliteSink(path))
    assert table.column("learner_id").to_pylist() == list(np.repeat(SORTED, 2))
    assert verify_sql_version(SqliteSink(path))["version"] == result.version


def test_a_manifest_without_an_order_is_verified_in_id_order(tmp_path):
    """Versions published before the order was recorded: tried in (learner_id, rank) order,
    and a mismatch says the order may be why."""
    import json
    import sqlite3

    for learners, verifies in ((SORTED, True), (SORTED[::-1], False)):
        path = tmp_path / f"{verifies}.db"
        publish_frame(frame(learners), SqliteSink(path))
        con = sqlite3.connect(path)
        (manifest,) = con.execute("SELECT manifest FROM recommendations__manifest").fetchone()
        manifest = json.loads(manifest)
        del manifest["checksum"]["order"]
        con.execute("UPDATE recommendations__manifest SET manifest = ?", (json.dumps(manifest),))
        con.commit()
        con.close()
        if verifies:
            verify_sql_version(SqliteSink(path))
        else:
            with pytest.raises(ChecksumError, match=r"records no row order .* may mean another"):
                verify_sql_version(SqliteSink(path))
