"""Reading a version published to a SQL sink back, and verifying it against its manifest.

    table, manifest = read_sql_version("out/lists.db")                  # SQLite file
    table, manifest = read_sql_version("postgresql://u@host/db", table="recommendations")
    manifest = verify_sql_version(sink)         # a SqliteSink / PostgresSink works too;
                                                # raises ChecksumError on a mismatch

A SQL table keeps no row order (PostgreSQL's COPY encoder even loads rows grouped by source
and model version), so the rows are read `ORDER BY learner_id, rank`, string ids in byte
order (COLLATE "C" on PostgreSQL, SQLite's default BINARY; UTF-8 byte order is code point
order). That is the order the manifest's checksum was taken over when its `checksum.order` is
"learner_id, rank", which `publish` records when learners came in ascending id order with
ascending ranks (the pipeline publishes them so). A version whose order is "publish" cannot be
verified from a SQL table: `verify_sql_version` says so instead of reporting a mismatch.

The manifest row and the rows are read in one transaction: on SQLite one WAL snapshot; on
PostgreSQL the version's table is locked (ACCESS SHARE) before its manifest row is read, so a
swap waits until the read has ended and the manifest read is the one of the rows read.
Rows stream in batches of `batch_rows` (`iter` form: memory bounded by a batch).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from export.checksum import ORDER_CANONICAL, ChecksumError, verify_rows
from export.readers import manifest_schema
from export.rows import COLUMNS
from export.sinks.sql import TableNames, quote

__all__ = ["read_sql_version", "verify_sql_version", "with_sql_version"]

_BATCH_ROWS = 100_000


def _target(where: Any, table: str | None) -> tuple[str, Any, TableNames]:
    """(dialect, database, names) from a path / URL or a SqliteSink / PostgresSink."""
    if hasattr(where, "names") and hasattr(where, "kind"):  # a SQL sink
        names = where.names if table is None else TableNames(table)
        database = where.url if where.kind == "postgresql" else os.fspath(where.path)
        return where.kind, database, names
    names = TableNames(table or "recommendations")
    text = os.fspath(where)
    if text.startswith(("postgresql:", "postgresql+", "postgres:")):
        return "postgresql", text, names
    return "sqlite", text, names


def _batches(
    start: Callable[[], Callable[[int], list]], schema: pa.Schema, n: int
) -> Iterator[pa.Table]:
    """Arrow tables of `schema` from a query run by `start()` on the first batch asked for
    (a caller that refuses the version reads no row), fetched `n` rows at a time."""
    fetch = start()
    while rows := fetch(n):
        columns = zip(*rows, strict=True)  # transposed in C, no Python loop of ours per row
        arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
        yield pa.Table.from_arrays(arrays, schema=schema)


def _order_by(manifest: dict[str, Any], collation: str) -> str:
    string_ids = manifest["schema"]["learner_id"] == "string"
    collate = f" COLLATE {collation}" if string_ids else ""
    return f"ORDER BY {quote('learner_id')}{collate}, {quote('rank')}"


def _select(table: str, manifest: dict[str, Any], collation: str) -> str:
    columns = ", ".join(quote(c) for c in COLUMNS)
    return f"SELECT {columns} FROM {quote(table)} {_order_by(manifest, collation)}"


_CODEPOINT = "ncf_codepoint"  # SQLite collation registered on a UTF-16 database


def _sqlite_collation(con: sqlite3.Connection) -> str:
    """BINARY (byte order: code point order for UTF-8 text), or, in a database stored as
    UTF-16 (PRAGMA encoding), where BINARY compares UTF-16 bytes, a code point collation:
    Python compares str by code point."""
    if con.execute("PRAGMA encoding").fetchone()[0] == "UTF-8":
        return "BINARY"
    con.create_collation(_CODEPOINT, lambda a, b: (a > b) - (a < b))
    return _CODEPOINT


def _manifest(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def _missing(where: str, names: TableNames, version: str | None) -> LookupError:
    """The error for a manifest row that is absent, or names no table (a dropped version)."""
    if version is None:
        return LookupError(
            f"{where}: no manifest row names table {names.live!r} as live (nothing published "
            "there by the export)"
        )
    return LookupError(
        f"{where}: version {version} of {names.live!r} is not stored (never published, or "
        "dropped after keep_versions newer ones)"
    )


def _sqlite(database: str, names, version, consume, batch_rows):
    if database.startswith("sqlite:///"):
        database = database[len("sqlite:///") :]
    # read-only (never creates an empty database); as_uri percent-encodes '?' and '#'
    uri = (
        database if database.startswith("file:") else f"{Path(database).resolve().as_uri()}?mode=ro"
    )
    where = f"sqlite {database}"
    try:
        con = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as err:
        raise LookupError(f"{where}: cannot open the database: {err}") from err
    try:
        con.execute("BEGIN")  # one snapshot for the manifest row and the rows
        m = quote(names.manifest)
        try:
            if version is None:
                sql, args = (
                    f"SELECT version, table_name, manifest FROM {m} WHERE table_name = ?",
                    (names.live,),
                )
            else:
                sql = f"SELECT version, table_name, manifest FROM {m} WHERE version = ?"
                args = (version,)
            row = con.execute(sql, args).fetchone()
        except sqlite3.OperationalError as err:  # no manifest table
            raise LookupError(f"{where}: no export manifest table ({err})") from err
        if row is None or row[1] is None:
            raise _missing(where, names, version)
        manifest = _manifest(row[2])
        sql = _select(row[1], manifest, _sqlite_collation(con))
        batches = _batches(
            lambda: con.execute(sql).fetchmany, manifest_schema(manifest), batch_rows
        )
        return consume(manifest, batches, f"{where} table {row[1]!r} (version {row[0]})")
    finally:
        with contextlib.suppress(sqlite3.Error):
            con.close()


def _postgres(url: str, names, version, consume, batch_rows):
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from export.manifest import redact_url
    from export.sinks.postgres import _engine_url

    where = f"postgresql {redact_url(url)}"
    engine = create_engine(_engine_url(url), poolclass=NullPool)
    m = quote(names.manifest)
    try:
        with engine.connect() as conn:
            if version is None:
                # locked first: a swap (which renames this table) waits for the read to end,
                # and the manifest row read next is the one of the rows read
                conn.execute(text(f"LOCK TABLE {quote(names.live)} IN ACCESS SHARE MODE"))
                sql = f"SELECT version, table_name, manifest FROM {m} WHERE table_name = :k"
                key = names.live
            else:
                sql = f"SELECT version, table_name, manifest FROM {m} WHERE version = :k"
                key = version
            row = conn.execute(text(sql), {"k": key}).first()
            if version is not None and row is not None and row[1] is not None:
                # an archive's name changes only when it is dropped: lock, then read again
                conn.execute(text(f"LOCK TABLE {quote(row[1])} IN ACCESS SHARE MODE"))
                row = conn.execute(text(sql), {"k": key}).first()
            if row is None or row[1] is None:
                raise _missing(where, names, version)
            manifest = _manifest(row[2])
            sql = text(_select(row[1], manifest, '"C"'))
            run = conn.execution_options(yield_per=batch_rows).execute
            batches = _batches(lambda: run(sql).fetchmany, manifest_schema(manifest), batch_rows)
            out = consume(manifest, batches, f"{where} table {row[1]!r} (version {row[0]})")
            conn.rollback()  # read only
            return out
    except SQLAlchemyError as err:
        orig = getattr(err, "orig", None) or err
        raise LookupError(f"{where}: reading table {names.live!r} failed: {orig}") from err
    finally:
        engine.dispose()


def with_sql_version(
    where: Any,
    consume: Callable[[dict[str, Any], Iterator[pa.Table], str], Any],
    *,
    table: str | None = None,
    version: str | None = None,
    batch_rows: int = _BATCH_ROWS,
) -> Any:
    """Call consume(manifest, batches, description) inside the read transaction of one
    version (the live one, or `version`) and return its result; batches are Arrow tables of
    the export schema, `ORDER BY learner_id, rank` (module docstring)."""
    dialect, database, names = _target(where, table)
    read = _postgres if dialect == "postgresql" else _sqlite
    return read(database, names, version, consume, batch_rows)


def read_sql_version(
    where: Any, *, table: str | None = None, version: str | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    """(rows ordered by learner_id then rank, manifest) of the live version of `table` (or of
    the archived `version`) in a SQLite file / PostgreSQL URL / SQL sink `where`."""

    def whole(manifest, batches, _):
        tables = list(batches)
        schema = manifest_schema(manifest)
        return (pa.concat_tables(tables) if tables else schema.empty_table()), manifest

    return with_sql_version(where, whole, table=table, version=version)


def verify_sql_version(
    where: Any, *, table: str | None = None, version: str | None = None
) -> dict[str, Any]:
    """Recompute the checksum of a SQL version (streamed) and compare it with its manifest's;
    returns the manifest. Raises `ChecksumError` on a mismatch, or when the version was
    published in an order the table cannot give back (`checksum.order` "publish")."""

    def check(manifest, batches, what):
        order = manifest["checksum"].get("order")  # None: published before orders were kept
        if order is not None and order != ORDER_CANONICAL:
            raise ChecksumError(
                f"{what}: its checksum covers the rows in the order they were published "
                f"(checksum order {order!r}), and a SQL table keeps no row order to verify "
                "against; publish learners in ascending id order (ranks ascending) to get a "
                f"checksum over ({ORDER_CANONICAL}) that a SQL reader can verify"
            )
        try:
            verify_rows(batches, manifest, where=what)
        except ChecksumError as err:
            if order is None:  # it may simply have been published in another order
                raise ChecksumError(
                    f"{err}. Its manifest records no row order (published before orders were "
                    f"recorded): it verifies only if it was published in ({ORDER_CANONICAL}) "
                    "order, so a mismatch may mean another order, not an alteration"
                ) from None
            raise
        return manifest

    return with_sql_version(where, check, table=table, version=version)
