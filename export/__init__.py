"""export: ranked lists published safely for services (see docs/design.md).

    from export import publish, ParquetSink, GateConfig
    result = publish(chunks, sink=ParquetSink("out/lists", keep_versions=3),
                     gates=GateConfig(k=10, min_coverage=0.2, max_fallback_share=0.5),
                     learners=learner_ids, catalogue=course_ids, eligible_learners=active_ids,
                     watched=WatchedPairs(watched_csr, learner_map, course_map),
                     manifest={"config": cfg, "data_fingerprint": fp, "code_version": cv})
    result.version, result.location, result.manifest

Rows (`export.rows`): learner_id, rank, course_id, score, source, model_version, streamed in
chunks of whole learners. Gates (`export.gates`) run chunk by chunk; a failure publishes
nothing. Sinks (`export.sinks`): Parquet / CSV / JSONL version folders behind an atomically
swapped `current` link, or a SQL table (SQLite file, PostgreSQL by URL) swapped in by renames
in one transaction; each version carries a manifest (`export.manifest`) with the rows'
checksum (`export.checksum`). Readers: `export.readers` (file versions), `export.sqlread`
(SQL tables, read back ORDER BY learner_id, rank, and verified when the checksum's order is
that one: learners published in ascending id order).
"""

from export.checksum import ChecksumError, rows_checksum
from export.gates import GateConfig, GateError, GateResult, WatchedPairs
from export.manifest import redact_url
from export.publish import PublishResult, publish
from export.readers import current_version, read_manifest, read_version
from export.rows import COLUMNS, EmptyInputError, RowError
from export.sinks import (
    CsvSink,
    JsonlSink,
    ParquetSink,
    SchemaMismatchError,
    SinkError,
    SqliteSink,
    make_sink,
)
from export.sqlread import read_sql_version, verify_sql_version


def __getattr__(name: str):
    # PostgresSink loads SQLAlchemy (~0.4 s): only when asked for.
    if name == "PostgresSink":
        from export.sinks.postgres import PostgresSink

        return PostgresSink
    raise AttributeError(f"module 'export' has no attribute {name!r}")


__all__ = [
    "publish",
    "PublishResult",
    "GateConfig",
    "GateResult",
    "GateError",
    "WatchedPairs",
    "ParquetSink",
    "CsvSink",
    "JsonlSink",
    "SqliteSink",
    "PostgresSink",
    "make_sink",
    "SinkError",
    "SchemaMismatchError",
    "RowError",
    "EmptyInputError",
    "COLUMNS",
    "current_version",
    "read_manifest",
    "read_version",
    "rows_checksum",
    "ChecksumError",
    "read_sql_version",
    "verify_sql_version",
    "redact_url",
]
