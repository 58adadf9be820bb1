"""SQL sinks on SQLite and on a real PostgreSQL (the `postgres_url` fixture): staging + swap in
one transaction, manifest table, retention, bad databases; and the binary COPY encoder."""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import uuid

import numpy as np
import pyarrow as pa
import pytest

from export import (
    COLUMNS,
    GateConfig,
    GateError,
    ParquetSink,
    PostgresSink,
    RowError,
    SchemaMismatchError,
    SinkError,
    SqliteSink,
    publish,
    redact_url,
    rows_checksum,
)
from export.sinks.pgcopy import encode_binary
from export.sinks.postgres import _lock_key
from export.sinks.sql import TableNames
from tests.export_fakes import PROVENANCE, lists, run, version_reader


class Target:
    """One database and table name to publish to, with plain-driver readers."""

    def __init__(self, kind: str, where: str, table: str):
        self.kind, self.where, self.table = kind, where, table

    def sink(self, **kw):
        cls = SqliteSink if self.kind == "sqlite" else PostgresSink
        return cls(self.where, **{"table": self.table, **kw})

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.kind == "sqlite":
            con = sqlite3.connect(self.where)
            try:
                rows = con.execute(sql.replace("%s", "?"), params).fetchall()
                con.commit()
                return rows
            finally:
                con.close()
        import psycopg

        with psycopg.connect(self.where, autocommit=True) as con:
            cur = con.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def read(self, table: str | None = None) -> pa.Table:
        """The live table in one statement, in publish order (learners were emitted by id)."""
        rows = self.query(f'SELECT * FROM "{table or self.table}" ORDER BY learner_id, rank')
        return pa.Table.from_pylist([dict(zip(COLUMNS, r, strict=True)) for r in rows])

    def tables(self) -> list[str]:
        if self.kind == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        return sorted(n for (n,) in self.query(sql) if n.startswith(self.table))

    def manifest_rows(self) -> list[tuple]:
        return self.query(
            f'SELECT version, table_name FROM "{self.table}__manifest" ORDER BY version'
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path) -> Target:
    if request.param == "sqlite":
        return Target("sqlite", str(tmp_path / "lists.db"), "lists")
    url = request.getfixturevalue("postgres_url")
    return Target("postgresql", url, f"t{uuid.uuid4().hex[:12]}")


def test_publishes_swap_the_live_table_and_keep_versions(target):
    results = [
        run(lists(model_version=f"m{i}", seed=i), target.sink(keep_versions=2)) for i in range(3)
    ]
    v = [r.version for r in results]
    names = TableNames(target.table)
    live = target.read()
    assert rows_checksum(live) == results[-1].manifest["checksum"]["hex"]
    assert live.column("model_version").unique().to_pylist() == ["m2"]
    assert target.tables() == sorted([target.table, names.manifest, names.archive(v[1])])
    assert target.manifest_rows() == [
        (v[0], None),
        (v[1], names.archive(v[1])),
        (v[2], target.table),
    ]
    (stored,) = target.query(
        f'SELECT manifest FROM "{names.manifest}" WHERE version = %s', (v[2],)
    )[0:1]
    stored = stored[0] if isinstance(stored[0], dict) else json.loads(stored[0])
    assert stored == json.loads(json.dumps(results[-1].manifest))
    assert stored["table"] == {
        "live": target.table,
        "previous_version_kept_as": names.archive(v[1]),
    }
    archived = target.read(names.archive(v[1]))  # the previous version stays readable
    assert rows_checksum(archived) == results[1].manifest["checksum"]["hex"]


def test_string_ids_round_trip(target):
    data = lists(string_ids=True)
    result = run(data, target.sink())
    assert target.read().equals(pa.concat_tables(data.chunks()).cast(target.read().schema))
    assert rows_checksum(target.read()) == result.manifest["checksum"]["hex"]


def test_a_table_with_other_columns_is_left_untouched(target):
    target.query(f'CREATE TABLE "{target.table}" (learner_id TEXT, course_id INTEGER, extra REAL)')
    target.query(f'INSERT INTO "{target.table}" VALUES (%s, %s, %s)', ("a", 1, 0.5))
    with pytest.raises(SchemaMismatchError) as info:
        run(lists(), target.sink())
    message = str(info.value)
    assert "missing columns ['rank', 'score', 'source', 'model_version']" in message
    assert "unexpected columns ['extra']" in message
    assert "learner_id is " in message and "Nothing was published" in message
    assert target.query(f'SELECT * FROM "{target.table}"') == [("a", 1, 0.5)]
    assert target.tables() == [target.table]  # no staging table, no manifest table


def test_a_failed_gate_leaves_the_live_table_untouched(target):
    first = run(lists(), target.sink())
    with pytest.raises(GateError, match="complete_lists"):
        run(lists(k=4, model_version="bad"), target.sink(), gates=GateConfig(k=5))
    assert rows_checksum(target.read()) == first.manifest["checksum"]["hex"]
    assert target.tables() == sorted([target.table, f"{target.table}__manifest"])
    assert target.manifest_rows() == [(first.version, target.table)]


def test_a_committed_leftover_staging_table_is_dropped(target):
    run(lists(), target.sink())
    leftover = TableNames(target.table).staging("20000101T000000000000Z")
    target.query(f'CREATE TABLE "{leftover}" (x INTEGER)')
    run(lists(), target.sink())
    assert leftover not in target.tables()


def test_a_reader_during_publishes_sees_one_whole_version(target):
    datasets = [lists(model_version=f"m{i}", seed=i, n_learners=300) for i in range(5)]
    checksums = {d.model_version: rows_checksum(pa.concat_tables(d.chunks())) for d in datasets}
    run(datasets[0], target.sink(keep_versions=2))
    with version_reader(target.read, checksums) as (seen, errors):
        for data in datasets[1:]:
            run(data, target.sink(keep_versions=2))
    assert not errors, errors[:3]
    assert len(seen) > 3 and seen == sorted(seen)  # versions only move forward
    assert target.read().column("model_version")[0].as_py() == "m4"


# --- databases that refuse -------------------------------------------------------------------


def test_sqlite_opened_read_only_publishes_nothing(tmp_path):
    path = tmp_path / "lists.db"
    first = run(lists(), SqliteSink(path, table="lists"))
    with pytest.raises(SinkError, match="read-only.*nothing published"):
        run(lists(model_version="m2"), SqliteSink(f"file:{path}?mode=ro", table="lists"))
    target = Target("sqlite", str(path), "lists")
    assert rows_checksum(target.read()) == first.manifest["checksum"]["hex"]


def test_sqlite_in_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SinkError, match="cannot open the database"):
        run(lists(), SqliteSink(tmp_path / "no" / "such" / "lists.db"))


def test_postgres_refusing_the_connection_names_the_redacted_url():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://bob:s3cret@127.0.0.1:{port}/lists"
    with pytest.raises(SinkError) as info:
        run(lists(), PostgresSink(url, connect_timeout=2))
    message = str(info.value)
    assert f"postgresql+psycopg://bob:***@127.0.0.1:{port}/lists" in message or (
        f"postgresql://bob:***@127.0.0.1:{port}/lists" in message
    )
    assert "cannot connect" in message and "s3cret" not in message


def test_postgres_role_without_write_permission_publishes_nothing(postgres_url):
    role, table = f"r{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:12]}"
    admin = Target("postgresql", postgres_url, table)
    admin.query(f'CREATE ROLE "{role}" LOGIN')
    url = postgres_url.replace("postgres@", f"{role}@", 1)
    with pytest.raises(SinkError, match="permission denied"):
        run(lists(), PostgresSink(url, table=table))
    assert admin.tables() == []


def test_postgres_read_only_transactions_publish_nothing(postgres_url):
    table = f"t{uuid.uuid4().hex[:12]}"
    url = postgres_url + "?options=-c%20default_transaction_read_only%3Don"
    with pytest.raises(SinkError, match="read-only transaction"):
        run(lists(), PostgresSink(url, table=table))
    assert Target("postgresql", postgres_url, table).tables() == []


def test_postgres_publisher_lock_held_elsewhere_is_a_clear_error(postgres_url):
    import psycopg

    table = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (_lock_key(table),))
        with pytest.raises(SinkError, match="another export holds the publish lock"):
            run(lists(), PostgresSink(postgres_url, table=table, lock_timeout=0.3))


def test_postgres_many_labels_use_the_general_encoder(postgres_url):
    data = lists()
    chunks = []
    for chunk in data.chunks():  # one model_version per learner: too many combinations
        tags = pa.array([f"mv-{i // 5}-é" for i in chunk.column("learner_id").to_pylist()])
        chunks.append(chunk.set_column(5, "model_version", tags))
    result = publish(
        chunks,
        sink=PostgresSink(postgres_url, table=f"t{uuid.uuid4().hex[:12]}", freeze=False),
        gates=GateConfig(k=5),
        learners=data.learner_ids,
        catalogue=data.course_ids,
        manifest=PROVENANCE,
    )
    table = Target("postgresql", postgres_url, result.location).read()
    assert rows_checksum(table) == result.manifest["checksum"]["hex"]


# --- names, URLs, the COPY encoder -----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Lists", "1lists", "lists__x", "lists; drop table x", 'a"b', "a" * 33, "", "lists-x"]
)
def test_table_names_are_validated(name):
    with pytest.raises(ValueError, match="not a valid table name"):
        TableNames(name)


def test_urls_are_redacted():
    assert redact_url("postgresql://u:pw@h:5/d") == "postgresql://u:***@h:5/d"
    assert "pw" not in redact_url("postgresql://u@h/d?password=pw&sslmode=require")
    assert "sslmode=require" in redact_url("postgresql://u@h/d?password=pw&sslmode=require")


def _decode(payload: bytes, types: list[str]) -> list[tuple]:
    """A plain-Python reader of binary COPY row data (the format's reference)."""
    rows, pos = [], 0
    while pos < len(payload):
        (count,) = struct.unpack_from(">h", payload, pos)
        pos += 2
        row = []
        for kind in types[:count]:
            (size,) = struct.unpack_from(">i", payload, pos)
            pos += 4
            raw = payload[pos : pos + size]
            pos += size
            fmt = {"int64": ">q", "int32": ">i", "double": ">d"}.get(kind)
            row.append(struct.unpack(fmt, raw)[0] if fmt else raw.decode())
        rows.append(tuple(row))
    return rows


@pytest.mark.parametrize("string_ids", [False, True])
def test_binary_copy_encoding_matches_the_format(string_ids):
    data = lists(n_learners=40, string_ids=string_ids)
    table = pa.concat_tables(data.chunks())
    table = table.set_column(4, "source", pa.array(["", "ünï", "blend", "x"] * 50))
    expected = sorted(tuple(r.values()) for r in table.to_pylist())
    types = [str(f.type) for f in table.schema]
    for max_groups in (64, 0):  # the grouped fast path and the general path
        payload = b"".join(
            bytes(p) for p in encode_binary(table, batch_rows=77, max_groups=max_groups)
        )
        assert sorted(_decode(payload, types)) == expected
    assert np.isfinite(table.column("score").to_numpy()).all()


# --- after the swap: pruning, views; what every sink writes the same way ---------------------


def _publish(rows, data, sink, **kw):
    """Publish `rows` (not data's own chunks) with data's ids and the default gates."""
    args = {"gates": GateConfig(k=data.k), "learners": data.learner_ids, "manifest": PROVENANCE}
    return publish(rows, sink=sink, catalogue=data.course_ids, **{**args, **kw})


def test_sqlite_a_prune_blocked_by_another_writer_is_reported_not_raised(
    tmp_path, monkeypatch, caplog
):
    import export.sinks.sqlite as sqlite_sink

    target = Target("sqlite", str(tmp_path / "lists.db"), "lists")
    names = TableNames("lists")
    first, second = (run(lists(model_version=m), target.sink(keep_versions=1)) for m in "ab")
    assert target.manifest_rows()[0] == (first.version, None)  # pruned as usual so far
    other = sqlite3.connect(target.where, isolation_level=None)
    archives_to_drop = sqlite_sink.archives_to_drop

    def lock_then_list(*args):  # runs after the swap committed, before the drops
        other.execute("BEGIN IMMEDIATE")
        return archives_to_drop(*args)

    monkeypatch.setattr(sqlite_sink, "archives_to_drop", lock_then_list)
    try:
        third = run(lists(model_version="c"), target.sink(keep_versions=1, busy_timeout=0.1))
    finally:
        other.execute("ROLLBACK")
        other.close()
    kept = names.archive(second.version)
    assert third.prune_errors == (f"{kept}: database is locked",)
    assert kept in caplog.text and "could not be removed" in caplog.text
    assert rows_checksum(target.read()) == third.manifest["checksum"]["hex"]
    assert target.manifest_rows()[1:] == [(second.version, kept), (third.version, "lists")]

    monkeypatch.undo()  # the next publish drops what was left
    fourth = run(lists(model_version="d"), target.sink(keep_versions=1))
    assert fourth.prune_errors == ()
    assert target.tables() == sorted(["lists", names.manifest])


def test_sqlite_a_view_on_the_live_table_reads_each_new_version(tmp_path):
    target = Target("sqlite", str(tmp_path / "lists.db"), "lists")
    run(lists(model_version="m0"), target.sink(keep_versions=2))
    target.query('CREATE VIEW served AS SELECT * FROM "lists"')
    for i in (1, 2, 3):  # from the second publish on, an archive the view could name is dropped
        result = run(lists(model_version=f"m{i}", seed=i), target.sink(keep_versions=2))
        assert rows_checksum(target.read("served")) == result.manifest["checksum"]["hex"]
        assert result.prune_errors == ()
    (sql,) = target.query("SELECT sql FROM sqlite_master WHERE name = 'served'")[0]
    assert sql == 'CREATE VIEW served AS SELECT * FROM "lists"'


def test_postgres_a_view_blocking_the_prune_is_reported_not_raised(postgres_url, caplog):
    table = f"t{uuid.uuid4().hex[:12]}"
    target, names = Target("postgresql", postgres_url, table), TableNames(table)
    first = run(lists(model_version="a"), target.sink(keep_versions=1))
    target.query(f'CREATE VIEW "{table}_view" AS SELECT * FROM "{table}"')
    # the view follows the first version to its archive name, which then cannot be dropped
    second = run(lists(model_version="b"), target.sink(keep_versions=1))
    third = run(lists(model_version="c"), target.sink(keep_versions=1))
    kept = names.archive(first.version)
    assert (
        second.prune_errors
        == third.prune_errors
        == (f"{kept}: cannot drop table {kept} because other objects depend on it",)
    )
    assert kept in caplog.text and "could not be removed" in caplog.text
    assert rows_checksum(target.read()) == third.manifest["checksum"]["hex"]
    assert target.query(f'SELECT DISTINCT model_version FROM "{table}_view"') == [("a",)]
    assert target.manifest_rows() == [
        (first.version, kept),
        (second.version, None),
        (third.version, table),
    ]
    target.query(f'DROP VIEW "{table}_view"')
    assert run(lists(model_version="d"), target.sink(keep_versions=1)).prune_errors == ()
    assert kept not in target.tables()


def test_postgres_a_reader_of_an_old_version_delays_its_drop_not_the_publish(
    postgres_url, monkeypatch
):
    import sqlalchemy as sa

    import export.sinks.postgres as pg_sink

    monkeypatch.setattr(pg_sink, "PRUNE_LOCK_TIMEOUT_MS", 200)
    table = f"t{uuid.uuid4().hex[:12]}"
    target, names = Target("postgresql", postgres_url, table), TableNames(table)
    first = run(lists(model_version="a"), target.sink(keep_versions=2))
    run(lists(model_version="b"), target.sink(keep_versions=2))  # a is archived, kept
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as reader:  # a transaction that read the archive: holds its lock
            old = names.archive(first.version)
            assert reader.execute(sa.text(f'SELECT count(*) FROM "{old}"')).scalar() > 0
            third = run(lists(model_version="c"), target.sink(keep_versions=2))
            assert len(third.prune_errors) == 1 and third.prune_errors[0].startswith(old)
            assert "lock timeout" in third.prune_errors[0]
            assert target.query(f'SELECT DISTINCT model_version FROM "{table}"') == [("c",)]
            reader.rollback()
    finally:
        engine.dispose()
    run(lists(model_version="d"), target.sink(keep_versions=2))  # the next publish drops it
    assert old not in target.tables()


def test_a_nul_character_in_an_id_is_a_row_error_before_anything_is_written(target):
    data = lists(string_ids=True, n_learners=30)
    learners = list(data.learner_ids)
    learners[3] = "L\x00bad"
    chunk = data.chunk(0, learner_ids=learners, course_ids=data.course_ids)
    with pytest.raises(RowError) as info:
        _publish([chunk], data, target.sink(), learners=learners)
    message = str(info.value)
    assert "chunk 0.learner_id" in message and "NUL" in message
    assert "5 of 150 rows" in message and "'L\\x00bad'" in message
    assert [t for t in target.tables() if t != f"{target.table}__manifest"] == []


def test_negative_zero_scores_are_written_as_zero_and_the_checksum_verifies(target, tmp_path):
    data = lists()
    table = pa.concat_tables(data.chunks())
    rank = table.column("rank").to_numpy()
    score = np.where(rank == data.k, -0.0, table.column("score").to_numpy())
    rows = table.set_column(3, table.schema.field(3), pa.array(score))
    result = _publish(rows, data, target.sink())
    live = target.read()
    assert not np.signbit(live.column("score").to_numpy()).any()
    assert rows_checksum(live) == result.manifest["checksum"]["hex"]
    on_files = _publish(rows, data, ParquetSink(tmp_path / "files"))  # the same digest there
    assert on_files.manifest["checksum"] == result.manifest["checksum"]


def test_non_finite_provenance_is_stored_as_null(target):
    provenance = {**PROVENANCE, "config": {"patience": float("inf"), "floor": -np.inf}}
    run(lists(), target.sink(), manifest=provenance)
    (stored,) = target.query(f'SELECT manifest FROM "{target.table}__manifest"')[0]
    text = json.dumps(stored) if isinstance(stored, dict) else stored
    stored = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the manifest"))
    assert stored["config"] == {"patience": None, "floor": None}
