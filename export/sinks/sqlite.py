"""SQLite sink: a staging table loaded chunk by chunk, then swapped in by two renames in one
transaction (names in `export.sinks.sql`).

- The database is switched to WAL, so readers keep reading the live table (the old version)
  during the whole load and the swap; a reader's transaction sees the old version or the new
  one, never a mix.
- Each chunk is committed into the staging table by itself: the staging table is invisible to
  readers under its own name, and per-chunk commits keep the WAL file at about one chunk
  instead of the whole table. Rows go in with `executemany` of multi-row `INSERT ... VALUES
  (...), (...)` statements (`rows_per_statement` rows each) on plain Python lists made by
  numpy/Arrow `tolist()`: 1.5-2x the rows/s of one row per statement (measured in
  `benchmarks/bench_export.py`'s development; SQLite's per-statement overhead dominates).
- The swap runs with `PRAGMA legacy_alter_table=ON`: since SQLite 3.26 renaming a table
  rewrites the views that name it, so a reader's view on `<table>` would follow the old version
  to its archive name (and break once that is dropped); legacy renames leave views naming
  `<table>`, which is the new version after the swap.
- Older versions are dropped after the swap transaction, each in its own transaction. The new
  version is live by then, so a drop that fails (another writer holding the lock past
  `busy_timeout`) leaves that table, is reported in `PublishResult.prune_errors` and is retried
  by the next publish.
- A killed export leaves `<table>__stg_<version>`; the next publish drops it under the
  publisher lock (`<database>.export-lock`, an flock the kernel releases when its holder dies).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from export.manifest import to_json
from export.sinks.base import FileLock, SinkError, check_keep_versions
from export.sinks.sql import (
    TableNames,
    archives_to_drop,
    check_existing_tables,
    column_types,
    compare_columns,
    drop_statements,
    live_version_statement,
    manifest_ddl,
    swap_statements,
)
from export.sinks.sql import quote as _q

__all__ = ["SqliteSink"]

_SLICE = 100_000  # rows turned into Python objects at a time


def _database(path: str | os.PathLike) -> tuple[str, bool, Path]:
    """(what sqlite3.connect takes, uri flag, the database file) from a path, a
    `sqlite:///path` URL or a `file:path?mode=ro` URI."""
    text = os.fspath(path)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    if text.startswith("file:"):
        file = text[len("file:") :].split("?", 1)[0]
        return text, True, Path(file)
    return text, False, Path(text)


def _pylists(table: pa.Table) -> list[list]:
    """Columns as Python lists (numpy tolist for numbers, labels decoded once per value)."""
    out = []
    for col in table.columns:
        arr = col.combine_chunks()
        if pa.types.is_string(arr.type):
            enc = pc.dictionary_encode(arr)
            labels = np.array(enc.dictionary.to_pylist(), dtype=object)
            out.append(labels[enc.indices.to_numpy(zero_copy_only=False)].tolist())
        else:
            out.append(arr.to_numpy(zero_copy_only=False).tolist())
    return out


class SqliteSink:
    """Publishes into table `table` of the SQLite database at `path` (created if absent)."""

    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        table: str = "recommendations",
        keep_versions: int = 3,
        index: bool = True,
        rows_per_statement: int = 100,
        busy_timeout: float = 30.0,
        lock_timeout: float = 60.0,
    ):
        self.path = path
        self.names = TableNames(table)
        self.keep_versions = check_keep_versions(keep_versions)
        self.index = bool(index)
        if not 1 <= rows_per_statement <= 5000:  # 6 bound values per row, SQLite caps at 32766
            raise ValueError(f"rows_per_statement: must be in [1, 5000], got {rows_per_statement}")
        self.rows_per_statement = rows_per_statement
        self.busy_timeout, self.lock_timeout = busy_timeout, lock_timeout
        self._target, self._uri, self.file = _database(path)

    def __repr__(self) -> str:
        return f"SqliteSink({os.fspath(self.path)!r}, table={self.names.live!r})"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.file.resolve()),
            "table": self.names.live,
            "manifest_table": self.names.manifest,
            "keep_versions": self.keep_versions,
            "index": self.index,
        }

    @property
    def where(self) -> str:
        return f"sqlite {self.file}"

    def open(self, version: str, schema: pa.Schema) -> _SqliteStaging:
        return _SqliteStaging(self, version, schema)


class _SqliteStaging:
    def __init__(self, sink: SqliteSink, version: str, schema: pa.Schema):
        self.sink, self.version, self.schema = sink, version, schema
        self.names = sink.names
        self.staging = self.names.staging(version)
        self.types = column_types(schema, "sqlite")
        self._lock: FileLock | None = None
        self.prune_errors: list[str] = []
        try:
            self.con = sqlite3.connect(
                sink._target,
                uri=sink._uri,
                timeout=sink.busy_timeout,
                isolation_level=None,  # transactions are explicit below
                check_same_thread=False,  # publish() may write from its writer thread
            )
        except sqlite3.Error as err:
            raise SinkError(
                f"{sink.where}: cannot open the database: {err}; nothing published"
            ) from err
        try:
            self._prepare()
        except BaseException:
            self._close()
            raise

    def _step(self, what: str, sql: str, params: dict | tuple = ()) -> sqlite3.Cursor:
        try:
            return self.con.execute(sql, params)
        except sqlite3.Error as err:
            hint = " (the database is read-only)" if "readonly" in str(err) else ""
            raise SinkError(
                f"{self.sink.where}: {what} failed: {err}{hint}; nothing published"
            ) from err

    def _columns(self, table: str) -> dict[str, str]:
        rows = self._step("reading columns", f"PRAGMA table_info({_q(table)})").fetchall()
        return {r[1]: r[2] for r in rows}

    def _check_tables(self) -> None:
        check_existing_tables(self._columns, self.names, self.types, "sqlite", self.sink.where)

    def _prepare(self) -> None:
        self._step("checking the database", "SELECT count(*) FROM sqlite_master").fetchone()
        self._check_tables()  # before any write: a mismatch leaves the file as it was
        self._step("switching to WAL", "PRAGMA journal_mode=WAL").fetchone()
        lock_path = Path(f"{self.sink.file}.export-lock")
        try:
            self._lock = FileLock(lock_path, self.sink.lock_timeout, self.sink.where).acquire()
        except OSError as err:
            raise SinkError(f"{self.sink.where}: cannot take the publish lock: {err}") from err
        self._step(
            "creating the manifest table",
            f"CREATE TABLE IF NOT EXISTS {_q(self.names.manifest)} ({manifest_ddl('sqlite', _q)})",
        )
        tables = self._step("listing tables", "SELECT name FROM sqlite_master WHERE type='table'")
        for (name,) in tables.fetchall():
            if self.names.is_staging(name):  # a killed export's leftover
                self._step("dropping a leftover staging table", f"DROP TABLE {_q(name)}")
        cols = ", ".join(f"{_q(c)} {t} NOT NULL" for c, t in self.types.items())
        self._step("creating the staging table", f"CREATE TABLE {_q(self.staging)} ({cols})")
        self._step("setting synchronous", "PRAGMA synchronous=NORMAL")  # staging: not live yet
        per = self.sink.rows_per_statement
        values = ", ".join(["(" + ", ".join("?" * len(self.types)) + ")"] * per)
        names = ", ".join(_q(c) for c in self.types)
        self._insert_many = f"INSERT INTO {_q(self.staging)} ({names}) VALUES {values}"
        self._insert_one = (
            f"INSERT INTO {_q(self.staging)} ({names}) VALUES ({', '.join('?' * len(self.types))})"
        )

    def write(self, table: pa.Table) -> None:
        """One transaction per chunk; Python lists made per slice of `_SLICE` rows, so the
        Python objects of a 5M-row chunk (~0.8 GB) never exist at once."""
        per = self.sink.rows_per_statement
        step = max(_SLICE // per, 1) * per
        try:
            self.con.execute("BEGIN")
            for lo in range(0, table.num_rows, step):
                cols = _pylists(table.slice(lo, step))
                n = len(cols[0])
                full = n - n % per
                # statement j binds rows j*per .. j*per+per-1, row by row: column c of its
                # row k is cols[c][j*per + k] = cols[c][k:full:per][j]
                if full:
                    grouped = zip(*[c[k:full:per] for k in range(per) for c in cols], strict=True)
                    self.con.executemany(self._insert_many, grouped)
                if full < n:
                    rest = zip(*[c[full:] for c in cols], strict=True)
                    self.con.executemany(self._insert_one, rest)
            self.con.execute("COMMIT")
        except sqlite3.Error as err:
            raise SinkError(f"{self.sink.where}: loading the staging table failed: {err}") from err

    def commit(self, manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        names, version = self.names, self.version
        if self.sink.index:
            self._step(
                "indexing the staging table",
                f"CREATE INDEX {_q(names.index(version))} ON {_q(self.staging)} (learner_id)",
            )
        self._step("setting synchronous", "PRAGMA synchronous=FULL")
        # Views on <table> keep naming <table> across the renames (module docstring); the
        # connection is closed after this publish, so the setting goes with it.
        self._step("keeping views on the live table", "PRAGMA legacy_alter_table=ON")
        self._step("starting the swap", "BEGIN IMMEDIATE")
        live_cols = self._columns(names.live)
        live_version = None
        if live_cols:
            compare_columns(live_cols, self.types, table=names.live, where=self.sink.where)
            row = self._step(*live_version_statement(names)).fetchone()
            live_version = row[0] if row else None
        archived, swap = swap_statements(names, version, bool(live_cols), live_version)
        manifest = {
            **manifest,
            "table": {"live": names.live, "previous_version_kept_as": archived},
        }
        for statement in swap:
            self._step(*statement)
        self._step(
            "recording the manifest",
            f"INSERT INTO {_q(names.manifest)} (version, created_at, table_name, manifest) "
            "VALUES (?, ?, ?, ?)",
            (
                version,
                manifest.get("created_at") or dt.datetime.now(dt.UTC).isoformat(),
                names.live,
                to_json(manifest),
            ),
        )
        self._step("committing the swap", "COMMIT")
        self.prune_errors = self._prune()
        with contextlib.suppress(sqlite3.Error):
            self.con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._close()
        return names.live, manifest

    def _prune(self) -> list[str]:
        """Drop versions beyond `keep_versions`, each in its own transaction, after the swap
        (a drop inside the swap would hold the write lock while it frees the pages). The new
        version is live already: a failure is returned ("<table>: <reason>"), not raised, and
        the table is left for the next publish to drop."""
        try:
            tables = self.con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            names = [n for (n,) in tables.fetchall()]
        except sqlite3.Error as err:
            return [f"listing the old versions: {err}"]
        errors = []
        for name in archives_to_drop(names, self.names, self.sink.keep_versions):
            try:
                self.con.execute("BEGIN IMMEDIATE")
                for _, sql, params in drop_statements(self.names, name):
                    self.con.execute(sql, params)
                self.con.execute("COMMIT")
            except sqlite3.Error as err:
                with contextlib.suppress(sqlite3.Error):
                    if self.con.in_transaction:
                        self.con.execute("ROLLBACK")
                errors.append(f"{name}: {err}")
        return errors

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self.con.in_transaction:
                self.con.execute("ROLLBACK")
            self.con.execute(f"DROP TABLE IF EXISTS {_q(self.staging)}")
        self._close()

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
