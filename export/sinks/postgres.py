"""PostgreSQL sink (SQLAlchemy 2 + psycopg 3): a binary `COPY` into a staging table and the swap,
all in one transaction.

    BEGIN
      pg_advisory_xact_lock(<table>)            one publisher per table, released with the
                                                transaction (also when the client dies)
      CREATE TABLE <table>__stg_<version>
      COPY ... FROM STDIN (FORMAT BINARY, FREEZE)   streamed chunk by chunk (`export.sinks.pgcopy`)
      CREATE INDEX, ANALYZE                     (index=True)
      ALTER TABLE <table> RENAME TO <table>__v<previous version>
      ALTER TABLE <table>__stg_<version> RENAME TO <table>
      manifest row
    COMMIT
    DROP TABLE <older versions>                 each in its own transaction, after the swap;
                                                one that fails (say, a view depends on it) is
                                                reported in `PublishResult.prune_errors`, the
                                                table kept and retried by the next publish

Readers keep reading the old version until the renames, which take an exclusive lock on the
live table only for the last milliseconds of the transaction (`swap_lock_timeout` bounds the
wait for readers that hold it). `FREEZE` is allowed because the table was created in the same
transaction; it writes the rows already frozen, so the first reads need not set hint bits.
A killed export leaves nothing: its transaction, staging table included, is rolled back when
the server sees the connection drop.

Readers: read the live table in one statement, or in READ COMMITTED transactions. A table
rename is not MVCC-safe: a REPEATABLE READ transaction that began before a swap resolves
`<table>` to the new table afterwards (and frozen rows are visible to it).

Views: PostgreSQL binds a view to the table itself, not to its name, so a view on `<table>`
follows the old version to `<table>__v<version>` at the swap: it goes on showing that version,
and that archive can no longer be dropped (each publish reports it in `prune_errors`). Query
`<table>` itself, or recreate such views after each publish.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from typing import Any

import pyarrow as pa
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from export.manifest import redact_url, to_json
from export.sinks.base import SinkError, check_keep_versions
from export.sinks.pgcopy import HEADER, TRAILER, encode_binary
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

__all__ = ["PostgresSink", "PRUNE_LOCK_TIMEOUT_MS"]

PRUNE_LOCK_TIMEOUT_MS = 5_000  # how long dropping an old version waits for its readers


def _engine_url(url: str) -> str:
    """Any postgresql URL with the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ValueError(f"url: not a database URL: {redact_url(url)}") from err
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError(f"url: expected a postgresql:// URL, got {redact_url(url)}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _lock_key(table: str) -> int:
    """A stable signed 64-bit advisory lock key for one table name."""
    digest = hashlib.sha256(f"ncf-glmix export {table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _reason(err: BaseException) -> str:
    """The driver's message, first line (psycopg's text carries no password)."""
    orig = getattr(err, "orig", None) or err
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


class PostgresSink:
    """Publishes into table `table` of the PostgreSQL database at `url`."""

    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        table: str = "recommendations",
        keep_versions: int = 3,
        index: bool = True,
        freeze: bool = True,
        connect_timeout: int = 10,
        lock_timeout: float = 60.0,
        swap_lock_timeout: float = 30.0,
    ):
        self.url = url
        self._engine_url = _engine_url(url)
        self.names = TableNames(table)
        self.keep_versions = check_keep_versions(keep_versions)
        self.index, self.freeze = bool(index), bool(freeze)
        self.connect_timeout = int(connect_timeout)
        self.lock_timeout, self.swap_lock_timeout = lock_timeout, swap_lock_timeout

    def __repr__(self) -> str:
        return f"PostgresSink({redact_url(self.url)!r}, table={self.names.live!r})"

    @property
    def where(self) -> str:
        return f"postgresql {redact_url(self.url)}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": redact_url(self.url),
            "table": self.names.live,
            "manifest_table": self.names.manifest,
            "keep_versions": self.keep_versions,
            "index": self.index,
            "freeze": self.freeze,
        }

    def open(self, version: str, schema: pa.Schema) -> _PostgresStaging:
        return _PostgresStaging(self, version, schema)


class _PostgresStaging:
    def __init__(self, sink: PostgresSink, version: str, schema: pa.Schema):
        self.sink, self.version, self.schema = sink, version, schema
        self.names = sink.names
        self.staging = self.names.staging(version)
        self.types = column_types(schema, "postgresql")
        self._copy_cm = self._copy = None
        self.prune_errors: list[str] = []
        self.engine = create_engine(
            sink._engine_url,
            poolclass=NullPool,
            connect_args={"connect_timeout": sink.connect_timeout},
        )
        try:
            self.conn = self.engine.connect()
        except SQLAlchemyError as err:
            self.engine.dispose()
            raise SinkError(
                f"{sink.where}: cannot connect: {_reason(err)}; nothing published"
            ) from err
        try:
            self._prepare()
        except BaseException:
            self.abort()
            raise

    def _step(self, what: str, sql: str, params: dict | None = None):
        try:
            return self.conn.execute(text(sql), params or {})
        except DBAPIError as err:
            raise SinkError(
                f"{self.sink.where}: {what} failed: {_reason(err)}; nothing published"
            ) from err

    def _set_lock_timeout(self, seconds: float) -> None:
        self._step(
            "setting lock_timeout",
            "SELECT set_config('lock_timeout', :v, true)",
            {"v": f"{int(seconds * 1000)}ms"},
        )

    def _columns(self, table: str) -> dict[str, str]:
        rows = self._step(
            "reading columns",
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = :t ORDER BY ordinal_position",
            {"t": table},
        ).all()
        return {name: kind for name, kind in rows}

    def _check_tables(self) -> None:
        check_existing_tables(self._columns, self.names, self.types, "postgresql", self.sink.where)

    def _prepare(self) -> None:
        self._set_lock_timeout(self.sink.lock_timeout)
        try:
            self.conn.execute(
                text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(self.names.live)}
            )
        except DBAPIError as err:
            raise SinkError(
                f"{self.sink.where}: another export holds the publish lock on table "
                f"{self.names.live!r} ({_reason(err)}); nothing published"
            ) from err
        self._set_lock_timeout(0)
        self._check_tables()
        self._step(
            "creating the manifest table",
            f"CREATE TABLE IF NOT EXISTS {_q(self.names.manifest)} "
            f"({manifest_ddl('postgresql', _q)})",
        )
        tables = self._step(
            "listing tables",
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()",
        ).all()
        for (name,) in tables:
            if self.names.is_staging(name):  # only a committed one could be left; drop it
                self._step("dropping a leftover staging table", f"DROP TABLE {_q(name)}")
        cols = ", ".join(f"{_q(c)} {t} NOT NULL" for c, t in self.types.items())
        self._step("creating the staging table", f"CREATE TABLE {_q(self.staging)} ({cols})")
        names = ", ".join(_q(c) for c in self.types)
        options = "FORMAT BINARY, FREEZE" if self.sink.freeze else "FORMAT BINARY"
        cursor = self.conn.connection.driver_connection.cursor()
        self._copy_cm = cursor.copy(f"COPY {_q(self.staging)} ({names}) FROM STDIN ({options})")
        try:
            self._copy = self._copy_cm.__enter__()
            self._copy.write(HEADER)
        except Exception as err:
            self._copy_cm = self._copy = None
            raise SinkError(f"{self.sink.where}: starting COPY failed: {_reason(err)}") from err

    def write(self, table: pa.Table) -> None:
        try:
            for piece in encode_binary(table):
                self._copy.write(piece)
        except Exception as err:
            raise SinkError(
                f"{self.sink.where}: COPY into the staging table failed: {_reason(err)}"
            ) from err

    def _end_copy(self) -> None:
        copy_cm, self._copy_cm = self._copy_cm, None
        try:
            self._copy.write(TRAILER)
            copy_cm.__exit__(None, None, None)
        except Exception as err:
            raise SinkError(
                f"{self.sink.where}: COPY into the staging table failed: {_reason(err)}"
            ) from err

    def commit(self, manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        names, version = self.names, self.version
        self._end_copy()
        if self.sink.index:
            self._step(
                "indexing the staging table",
                f"CREATE INDEX {_q(names.index(version))} ON {_q(self.staging)} (learner_id)",
            )
            self._step("analyzing the staging table", f"ANALYZE {_q(self.staging)}")
        self._set_lock_timeout(self.sink.swap_lock_timeout)
        live_cols = self._columns(names.live)
        live_version = None
        if live_cols:
            compare_columns(live_cols, self.types, table=names.live, where=self.sink.where)
            row = self._step(*live_version_statement(names)).first()
            live_version = row[0] if row else None
        archived, swap = swap_statements(names, version, bool(live_cols), live_version)
        manifest = {
            **manifest,
            "table": {"live": names.live, "previous_version_kept_as": archived},
        }
        for statement in swap:
            self._step(*statement)
        created = manifest.get("created_at")
        self._step(
            "recording the manifest",
            f"INSERT INTO {_q(names.manifest)} (version, created_at, table_name, manifest) "
            "VALUES (:v, :c, :t, CAST(:m AS jsonb))",
            {
                "v": version,
                "c": dt.datetime.fromisoformat(created) if created else dt.datetime.now(dt.UTC),
                "t": names.live,
                "m": to_json(manifest),
            },
        )
        try:
            self.conn.commit()
        except DBAPIError as err:
            raise SinkError(
                f"{self.sink.where}: committing the swap failed: {_reason(err)}"
            ) from err
        self.prune_errors = self._prune()
        self._close()
        return names.live, manifest

    def _prune(self) -> list[str]:
        """Drop versions beyond `keep_versions` after the swap, one transaction each: a drop
        inside the swap transaction would hold readers of the live table until it ends. The
        new version is live already: a failure is returned ("<table>: <reason>"), not raised,
        and the table is left for the next publish to drop."""
        listing = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        try:
            names = [n for (n,) in self.conn.execute(text(listing)).all()]
            self.conn.commit()
        except SQLAlchemyError as err:
            with contextlib.suppress(Exception):
                self.conn.rollback()
            return [f"listing the old versions: {_reason(err)}"]
        errors = []
        for name in archives_to_drop(names, self.names, self.sink.keep_versions):
            try:
                # a reader still in a transaction on an old version would hold the DROP (and
                # so a publish that has already gone live) for as long as it reads: give up
                # after a while instead, and leave that version for the next publish
                self.conn.execute(text(f"SET LOCAL lock_timeout = {int(PRUNE_LOCK_TIMEOUT_MS)}"))
                for _, sql, params in drop_statements(self.names, name):
                    self.conn.execute(text(sql), params)
                self.conn.commit()
            except SQLAlchemyError as err:
                with contextlib.suppress(Exception):
                    self.conn.rollback()
                errors.append(f"{name}: {_reason(err)}")
        return errors

    def abort(self) -> None:
        if self._copy_cm is not None:
            copy_cm, self._copy_cm = self._copy_cm, None
            with contextlib.suppress(Exception):  # sends CopyFail: the server ends the COPY
                copy_cm.__exit__(RuntimeError, RuntimeError("export aborted"), None)
        with contextlib.suppress(Exception):
            self.conn.rollback()  # the staging table goes with the transaction
        self._close()

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.engine.dispose()
