"""Where published lists go: files (Parquet, CSV, JSONL) or a SQL table (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
from typing import Any

from export.sinks.base import SchemaMismatchError, Sink, SinkError, Staging
from export.sinks.files import CsvSink, JsonlSink, ParquetSink
from export.sinks.sqlite import SqliteSink

__all__ = [
    "Sink",
    "Staging",
    "SinkError",
    "SchemaMismatchError",
    "ParquetSink",
    "CsvSink",
    "JsonlSink",
    "SqliteSink",
    "PostgresSink",
    "make_sink",
    "SINK_KINDS",
]

SINK_KINDS = ("parquet", "csv", "jsonl", "sqlite", "postgresql")


def __getattr__(name: str) -> Any:
    # PostgresSink loads SQLAlchemy (~0.4 s): only when asked for.
    if name == "PostgresSink":
        from export.sinks.postgres import PostgresSink

        return PostgresSink
    raise AttributeError(f"module 'export.sinks' has no attribute {name!r}")


def make_sink(
    kind: str,
    *,
    path: str | os.PathLike | None = None,
    url: str | None = None,
    table: str = "recommendations",
    keep_versions: int = 3,
    index: bool = True,
    max_rows_per_file: int | None = None,
) -> Any:
    """One sink from flat settings (what `conf/export/default.yaml` holds): `path` is the
    version root of a file sink or the SQLite database file, `url` the PostgreSQL URL."""
    if kind not in SINK_KINDS:
        raise ValueError(f"kind: expected one of {list(SINK_KINDS)}, got {kind!r}")
    if kind == "postgresql":
        if not url:
            raise ValueError("url: the postgresql sink needs a URL (e.g. from an env variable)")
        from export.sinks.postgres import PostgresSink

        return PostgresSink(url, table=table, keep_versions=keep_versions, index=index)
    if path is None:
        raise ValueError(f"path: the {kind} sink needs a path")
    if kind == "sqlite":
        return SqliteSink(path, table=table, keep_versions=keep_versions, index=index)
    cls = {"parquet": ParquetSink, "csv": CsvSink, "jsonl": JsonlSink}[kind]
    return cls(path, keep_versions=keep_versions, max_rows_per_file=max_rows_per_file)
