"""What the SQL sinks share: table names (validated, derived per version), column types per
dialect, the comparison of an existing table's columns with the export's, and the statements
of the swap and of pruning old versions (each sink runs them in its own transactions).

Names: the live table is `<table>`; a version in the making `<table>__stg_<version>`; earlier
versions `<table>__v<version>` (the newest `keep_versions - 1` are kept); its learner index
`<table>__ix_<version>`; one row per version in `<table>__manifest` (version, created_at,
table_name: where that version's rows are now, NULL once dropped, manifest: JSON). A live
table that no manifest row claims (made by someone else with the same columns) is kept as
`<table>__prior_<version>` and never dropped by the export.

Old versions are dropped after the swap has committed: the new version is live by then, so a
drop that fails is reported (`PublishResult.prune_errors`), never raised as a failed publish.

Identifiers are validated against `NAME_PATTERN` and then quoted by the driver's quoting; every
value goes in as a bound parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from export.sinks.base import SchemaMismatchError

__all__ = [
    "NAME_PATTERN",
    "quote",
    "live_version_statement",
    "swap_statements",
    "drop_statements",
    "archives_to_drop",
    "TableNames",
    "column_types",
    "MANIFEST_COLUMNS",
    "manifest_ddl",
    "check_existing_tables",
    "compare_columns",
]

# Lower case (PostgreSQL folds unquoted names), no "__" (the separator of derived names), and
# short enough that every derived name fits PostgreSQL's 63-byte identifiers.
NAME_PATTERN = re.compile(r"^[a-z](?:[a-z0-9]|_(?!_)){0,31}$")
_VERSION = r"\d{8}t\d{12}z"

_TYPES = {
    "sqlite": {"int64": "INTEGER", "int32": "INTEGER", "double": "REAL", "string": "TEXT"},
    "postgresql": {
        "int64": "bigint",
        "int32": "integer",
        "double": "double precision",
        "string": "text",
    },
}
MANIFEST_COLUMNS = {
    "sqlite": {"version": "TEXT", "created_at": "TEXT", "table_name": "TEXT", "manifest": "TEXT"},
    "postgresql": {
        "version": "text",
        "created_at": "timestamp with time zone",
        "table_name": "text",
        "manifest": "jsonb",
    },
}


@dataclass(frozen=True)
class TableNames:
    live: str

    def __post_init__(self) -> None:
        if not isinstance(self.live, str) or not NAME_PATTERN.match(self.live):
            raise ValueError(
                f"table: {self.live!r} is not a valid table name; use 1-32 characters: a lower-case "
                "letter, then lower-case letters, digits and single underscores"
            )

    @property
    def manifest(self) -> str:
        return f"{self.live}__manifest"

    @staticmethod
    def _v(version: str) -> str:
        v = version.lower()
        if not re.fullmatch(_VERSION, v):
            raise ValueError(f"version: {version!r} is not a version name")
        return v

    def staging(self, version: str) -> str:
        return f"{self.live}__stg_{self._v(version)}"

    def archive(self, version: str) -> str:
        return f"{self.live}__v{self._v(version)}"

    def prior(self, version: str) -> str:
        return f"{self.live}__prior_{self._v(version)}"

    def index(self, version: str) -> str:
        return f"{self.live}__ix_{self._v(version)}"

    def is_archive(self, name: str) -> bool:
        return re.fullmatch(re.escape(self.live) + "__v" + _VERSION, name) is not None

    def is_staging(self, name: str) -> bool:
        return re.fullmatch(re.escape(self.live) + "__stg_" + _VERSION, name) is not None


def quote(name: str) -> str:
    """Quote an identifier that `TableNames` already validated (same in both dialects)."""
    return '"' + name.replace('"', '""') + '"'


Statement = tuple[str, str, dict]  # (what it does, for errors; SQL; named :parameters)


def live_version_statement(names: TableNames) -> Statement:
    """The version the manifest says the live table holds (no row: someone else's table)."""
    sql = f"SELECT version FROM {quote(names.manifest)} WHERE table_name = :t"
    return "reading the live version", sql, {"t": names.live}


def swap_statements(
    names: TableNames, version: str, live_exists: bool, live_version: str | None
) -> tuple[str | None, list[Statement]]:
    """The swap, run in the caller's open transaction: the live table, if any, renamed to its
    archive name (`prior` when no manifest row claims it) with its manifest row following it,
    then the staging table renamed live. Returns (the name the old live table is kept as, or
    None; the statements in order)."""
    staging = ("renaming the staging table",
               f"ALTER TABLE {quote(names.staging(version))} RENAME TO {quote(names.live)}", {})  # fmt: skip
    if not live_exists:
        return None, [staging]
    kept = names.archive(live_version) if live_version else names.prior(version)
    return kept, [
        ("archiving the live table",
         f"ALTER TABLE {quote(names.live)} RENAME TO {quote(kept)}", {}),
        ("updating the manifest table",
         f"UPDATE {quote(names.manifest)} SET table_name = :a WHERE table_name = :t",
         {"a": kept, "t": names.live}),
        staging,
    ]  # fmt: skip


def archives_to_drop(table_names, names: TableNames, keep_versions: int) -> list[str]:
    """The archived versions beyond the newest `keep_versions - 1` (names sort by version)."""
    archives = sorted(n for n in table_names if names.is_archive(n))
    return archives[: max(len(archives) - (keep_versions - 1), 0)]


def drop_statements(names: TableNames, table: str) -> list[Statement]:
    """Drop an archived version; its manifest row stays, pointing nowhere."""
    return [
        ("dropping an old version", f"DROP TABLE IF EXISTS {quote(table)}", {}),
        ("dropping an old version",
         f"UPDATE {quote(names.manifest)} SET table_name = NULL WHERE table_name = :t",
         {"t": table}),
    ]  # fmt: skip


def manifest_ddl(dialect: str, quote=quote) -> str:
    """Column definitions of the manifest table (`quote`: the dialect's identifier quoting)."""
    t = MANIFEST_COLUMNS[dialect]
    return (
        f"{quote('version')} {t['version']} PRIMARY KEY, "
        f"{quote('created_at')} {t['created_at']} NOT NULL, "
        f"{quote('table_name')} {t['table_name']}, "
        f"{quote('manifest')} {t['manifest']} NOT NULL"
    )


def column_types(schema: pa.Schema, dialect: str) -> dict[str, str]:
    """Column -> SQL type of the export's rows in `dialect` ('sqlite' or 'postgresql')."""
    types = _TYPES[dialect]
    return {f.name: types[str(f.type)] for f in schema}


def compare_columns(
    actual: dict[str, str], expected: dict[str, str], *, table: str, where: str
) -> None:
    """Raise `SchemaMismatchError` naming every difference of an existing table's columns."""
    norm = {k: v.strip().lower() for k, v in actual.items()}
    want = {k: v.lower() for k, v in expected.items()}
    missing = [c for c in want if c not in norm]
    extra = [c for c in norm if c not in want]
    differ = [
        f"{c} is {actual[c]!r}, the export writes {expected[c]!r}"
        for c in want
        if c in norm and norm[c] != want[c]
    ]
    if missing or extra or differ:
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if extra:
            problems.append(f"unexpected columns {extra}")
        problems += differ
        raise SchemaMismatchError(
            f"{where}: table {table!r} exists with other columns: {'; '.join(problems)}. "
            "Nothing was published and the table was left untouched; publish under another "
            "table name, or rename or drop that table."
        )


def check_existing_tables(
    columns_of, names: TableNames, types: dict[str, str], dialect: str, where: str
) -> None:
    """The live table and the manifest table, when they exist, must have the export's
    columns (`compare_columns`). columns_of(table) -> {column: SQL type}, empty if absent."""
    for table, expected in ((names.live, types), (names.manifest, MANIFEST_COLUMNS[dialect])):
        actual = columns_of(table)
        if actual:
            compare_columns(actual, expected, table=table, where=where)
