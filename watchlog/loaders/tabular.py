"""Generic Parquet / CSV tables with a column mapping from configuration.

A table spec is a mapping (a plain dict or a Hydra DictConfig) or just a path:

    events:
      path: data/events.parquet          # a file, or a Parquet dataset folder of part files
      format: null                       # parquet | csv | tsv; null: from the suffix
      columns: {learner_id: user, course_id: item, ts: time}   # contract <- source
      fill: {impression: true}           # constant columns absent from the source
      extra: null                        # null: keep every unmapped column; or a list
      delimiter: null                    # CSV: null detects it from the header line
      encoding: utf8                     # CSV: the file's text encoding
      quoting: true                      # CSV: '"' quotes fields; false: quotes are text
      multiline: false                   # CSV: quoted fields may span lines (else an error)

Rules: source columns already named like contract columns are taken as they are;
contract columns neither mapped, present nor filled stay absent so validation names
them; unmapped source columns travel as extra columns; a mapping to a source column
that does not exist, or a target given twice, is an error naming the table and columns.
A null in `columns` or `fill` means "not mapped" / "not filled" (conf/data/tables.yaml
lists every contract column with null, so each is set without Hydra's `+`); a missing
constant is `nan`. A mapping whose `path` is null is no table.

A CSV file is indexed by its lines (header = line 1), so validation examples name file
lines; a file that cannot be read as it is raises `DataFileError` (file, line, rule, fix).
CSV columns are text as written except those feeding numeric contract columns; in ids and
text contract columns only an empty field is missing (docs/data_contract.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from watchlog.eventlog import EventLog
from watchlog.loaders._ids import narrow_ids, reconcile_id_kinds, text_ids, whole_float_ids
from watchlog.loaders._lines import physical_examples
from watchlog.loaders._read import (
    DELIMITER_CANDIDATES,
    DataFileError,
    detect_delimiter,
    read_delimited,
    read_header,
)
from watchlog.loaders._spec import FORMATS, TableSpec
from watchlog.report import DataReport
from watchlog.schema import CONTRACT_COLUMNS, TEXT_COLUMNS, SchemaError

__all__ = ["FORMATS", "CONTRACT_COLUMNS", "TableSpec", "load_tables", "read_table"]


def load_tables(
    events: TableSpec | Mapping[str, Any] | str | os.PathLike,
    learners: TableSpec | Mapping[str, Any] | str | os.PathLike | None = None,
    courses: TableSpec | Mapping[str, Any] | str | os.PathLike | None = None,
    *,
    ts_unit: str | None = None,
    duplicates: str = "error",
    strict_clicked: bool = False,
    report: DataReport | None = None,
) -> EventLog:
    """Read mapped Parquet/CSV tables and validate them into an `EventLog`.

    Missing learners / courses tables are derived from the event ids by validation
    (noted). `ts_unit` reads numeric timestamps as epochs ('s', 'ms', 'us', 'ns').
    `clicked` on non-impression events becomes missing (counted in the report) unless
    `strict_clicked`, which makes it an error. Validation problems name the file each
    table came from and, for CSV, the file lines of their examples.
    """
    report = report if report is not None else DataReport()
    specs = {
        name: None if spec is None else TableSpec.parse(name, spec)
        for name, spec in (("events", events), ("learners", learners), ("courses", courses))
    }
    if specs["events"] is None:
        raise ValueError("events: the spec needs a 'path' (it is null)")
    try:
        frames = {
            name: None if spec is None else read_table(spec, name, report=report)
            for name, spec in specs.items()
        }
        reconcile_id_kinds(frames, report)
        return EventLog.from_tables(
            frames["events"],
            frames["learners"],
            frames["courses"],
            ts_unit=ts_unit,
            duplicates=duplicates,
            strict_clicked=strict_clicked,
            report=report,
        )
    except SchemaError as err:
        files = {name: spec.path.name for name, spec in specs.items() if spec is not None}
        named = [
            replace(p, source=files[p.table]) if p.table in files and p.source is None else p
            for p in err.problems
        ]
        raise SchemaError(physical_examples(named, _delimited_files(specs))) from err


def _delimited_files(
    specs: Mapping[str, TableSpec | None],
) -> dict[str, tuple[Path, str, str | None]]:
    """File name -> (path, delimiter, quote) of the delimited tables (error path only)."""
    out = {}
    for spec in specs.values():
        if spec is None or spec.resolved_format() == "parquet":
            continue
        fmt = spec.resolved_format()
        delimiter = spec.delimiter or detect_delimiter(spec.path, _default_delimiter(fmt))
        # a quote matters to line counting only with a one-character delimiter
        quote = '"' if spec.quoting and len(delimiter) == 1 else None
        out[spec.path.name] = (spec.path, delimiter, quote)
    return out


def read_table(
    spec: TableSpec | Mapping[str, Any] | str | os.PathLike,
    table: str = "events",
    *,
    report: DataReport | None = None,
) -> pd.DataFrame:
    """One table, renamed and filled per its spec (not validated: see `load_tables`)."""
    if table not in CONTRACT_COLUMNS:
        raise ValueError(f"table must be one of {list(CONTRACT_COLUMNS)}, got {table!r}")
    spec = TableSpec.parse(table, spec)
    if spec is None:
        raise ValueError(f"{table}: the spec's path is null; give a path")
    fmt = spec.resolved_format()
    setting = f"data.source.{table}"
    delimiter = None
    if fmt != "parquet":
        if not spec.path.exists():
            raise FileNotFoundError(f"{spec.path}: no such file")
        if spec.path.is_dir():
            raise DataFileError(
                spec.path,
                None,
                f"is a folder; only a Parquet table can be a folder of part files, not {fmt}",
                f"point {setting}.path at the file (format: parquet for a Parquet dataset)",
            )
        delimiter = spec.delimiter or detect_delimiter(spec.path, _default_delimiter(fmt))
    available = _source_columns(spec, fmt, delimiter, setting)
    plan = _plan(table, spec, available)
    needed = list(dict.fromkeys([*spec.columns.values(), *plan]))
    # CSV: every column is read as text except those feeding a numeric contract column
    # (times, counts, flags), so `01` and `1` stay two segments and zip 02134 keeps its 0,
    # as Parquet keeps them; text contract columns read only an empty field as missing.
    numeric = {spec.columns.get(c, c) for c in CONTRACT_COLUMNS[table] if c not in TEXT_COLUMNS}
    text = [c for c in needed if c not in numeric] if delimiter is not None else []
    exact = {spec.columns.get(c, c) for c in TEXT_COLUMNS}
    source = _read_source(
        spec, fmt, needed, delimiter, setting, text=text, exact=[c for c in text if c in exact]
    )
    if len(source) == 0:
        raise DataFileError(
            spec.path,
            None if delimiter is None else 2,
            "no data rows" + ("" if delimiter is None else ": the file has a header line only"),
            f"check the export of the {table} table, or point {setting}.path at the full file",
        )
    if delimiter is not None:  # examples name records; load_tables makes them physical lines
        source.index = pd.RangeIndex(2, len(source) + 2, name="line")

    out = pd.DataFrame(index=source.index)
    for target, col in spec.columns.items():
        out[target] = source[col]
    for col in plan:  # kept under their own names (contract-named or extra)
        out[col] = source[col]
    n = len(out)
    for target, value in spec.fill.items():
        out[target] = _constant(value, n)
    organic = _organic_defaults(table, out.columns, spec.fill)
    if "impression" in organic and "clicked" in out.columns and "clicked" not in spec.fill:
        _warn_clicked_without_impression(table, available, setting, report)
    for target, value in organic.items():
        out[target] = _constant(value, n)
    out = out[_ordered(table, out.columns)]
    if delimiter is not None:
        out = text_ids(out, table, report)
    out = narrow_ids(whole_float_ids(out, table, spec.path.name, report))

    if report is not None:
        how = ""
        if delimiter is not None:
            chosen = "given" if spec.delimiter else "detected from the header line"
            how = f", delimiter {delimiter!r} ({chosen}), encoding {spec.encoding}"
        report.note(f"{table}: read {n:,} rows from {spec.path} ({fmt}{how})")
        for target, value in spec.fill.items():
            report.note(
                f"{table}.{target} filled with {value!r} for all {n:,} rows (not in source)"
            )
        if organic and "impression" in organic:
            report.note(
                f"{table}: no impression column (mapped, present or filled): all {n:,} events "
                "read as organic watches (impression=false, clicked missing); map or fill "
                f"{setting}.columns.impression if the log holds impressions"
            )
        elif organic:
            report.note(
                f"{table}: impression filled false and no clicked column: clicked is missing "
                f"for all {n:,} (organic) events"
            )
        if spec.columns:
            pairs = ", ".join(f"{t} <- {s}" for t, s in spec.columns.items())
            report.note(f"{table}: columns mapped {pairs}")
    return out


# ---- helpers ------------------------------------------------------------------------


def _default_delimiter(fmt: str) -> str:
    return "\t" if fmt == "tsv" else ","


def _source_columns(spec: TableSpec, fmt: str, delimiter: str | None, setting: str) -> list[str]:
    """The source's column names, from the Parquet schema or the CSV header only."""
    if not spec.path.exists():
        raise FileNotFoundError(f"{spec.path}: no such file")
    if fmt == "parquet":
        return _distinct(spec, list(_parquet_schema(spec.path).names), None, setting)
    names = read_header(
        spec.path,
        delimiter=delimiter,
        encoding=spec.encoding,
        quoting=spec.quoting,
        multiline=spec.multiline,
        setting=setting,
    )
    if len(names) == 1:  # a given delimiter the file does not use: one column named "a;b;c"
        other = [c for c in DELIMITER_CANDIDATES if c != delimiter and c in names[0]]
        if other:
            raise DataFileError(
                spec.path,
                1,
                f"the header is one column {names[0][:60]!r} that contains {other[0]!r}: "
                f"the file is not {delimiter!r}-delimited",
                f"set {setting}.delimiter={_config_name(other[0])} "
                "(or null to detect it from the header)",
            )
    return _distinct(spec, names, 1, setting)


def _distinct(spec: TableSpec, names: list[str], line: int | None, setting: str) -> list[str]:
    """The names, when no two columns share one: a repeated name would be resolved to one of
    the columns silently (which one depends on the reader)."""
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    repeated = {n: k for n, k in seen.items() if k > 1}
    if repeated:
        shown = ", ".join(f"{n!r} ({k} times)" for n, k in list(repeated.items())[:5])
        raise DataFileError(
            spec.path,
            line,
            f"column names must be distinct; repeated: {shown}",
            "rename the repeated columns in the file (the header is the file's first line)"
            if line is not None
            else "rename the repeated columns where the file is written",
        )
    return names


def _parquet_schema(path: Path) -> pa.Schema:
    """The schema of a Parquet file, or of a dataset folder of part files (Spark, Hive
    partitions included) as pyarrow's dataset reader sees it; pq.read_table reads both."""
    if not path.is_dir():
        return pq.read_schema(path)
    dataset = pq.ParquetDataset(path)
    if not dataset.files:
        raise DataFileError(
            path, None, "a folder without Parquet part files", "point the path at the table"
        )
    # The reader takes the first file's columns: part files of other tables (a saved
    # EventLog folder: events, learners, courses) would be read as one table, silently.
    first = set(pq.read_schema(dataset.files[0]).names)
    for other in dataset.files[1:]:
        if set(pq.read_schema(other).names) != first:
            raise DataFileError(
                path,
                None,
                f"part files with other columns: {Path(dataset.files[0]).name} and "
                f"{Path(other).name} (one folder is one table)",
                "point the path at one table's file or folder",
            )
    return dataset.schema


def _config_name(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else f"'{delimiter}'"


def _plan(table: str, spec: TableSpec, available: list[str]) -> list[str]:
    """Source columns kept under their own names; raises on any inconsistent mapping."""
    where = f"{table} table ({spec.path})"
    for target, col in spec.columns.items():
        if col not in available:
            raise ValueError(
                f"{where}: column mapping {target} <- {col!r}: no source column {col!r}; "
                f"available columns: {available}"
            )
    both = sorted(set(spec.columns) & set(spec.fill))
    if both:
        raise ValueError(f"{where}: {both} both mapped (columns) and filled (fill); choose one")
    if spec.extra is not None:
        absent = [c for c in spec.extra if c not in available]
        if absent:
            raise ValueError(
                f"{where}: extra column(s) {absent} not in the source; available: {available}"
            )
    mapped = set(spec.columns.values())
    contract = CONTRACT_COLUMNS[table]
    keep = [c for c in available if c not in mapped and c in contract]  # taken as they are
    extras = [c for c in available if c not in mapped and c not in contract]
    keep += extras if spec.extra is None else [c for c in spec.extra if c not in keep]
    clash = sorted(set(keep) & (set(spec.columns) | set(spec.fill)))
    if clash:
        raise ValueError(
            f"{where}: source column(s) {clash} would be overwritten by the mapping or fill; "
            "map them to another name or leave them out of 'extra'"
        )
    return keep


def _read_source(
    spec: TableSpec,
    fmt: str,
    columns: list[str],
    delimiter: str | None,
    setting: str,
    *,
    text: Sequence[str] = (),
    exact: Sequence[str] = (),
) -> pd.DataFrame:
    """Only the needed columns, through pyarrow; `text` columns of delimited files are read
    as text, never type-guessed, and of those `exact` ones read only an empty field as
    missing (NA, null, nan are text there)."""
    if fmt == "parquet":
        table = pq.read_table(spec.path, columns=columns)
    else:
        table = read_delimited(
            spec.path,
            delimiter=delimiter,
            types={c: pa.string() for c in text},
            exact_text=exact,
            include=columns,
            encoding=spec.encoding,
            quoting=spec.quoting,
            multiline=spec.multiline,
            setting=setting,
        )
    return table.to_pandas(self_destruct=True, split_blocks=True)


def _organic_defaults(table: str, columns: pd.Index, fill: Mapping[str, Any]) -> dict[str, Any]:
    """A log without an `impression` column, or with impression filled false (most logs:
    plays, views, purchases), is a log of organic events: impression=false, and clicked
    missing when it has no `clicked` column either (a `clicked` column on organic events is
    set to missing by validation, reported), rather than "required column is missing"
    errors."""
    if table != "events":
        return {}
    filled_organic = "impression" in fill and fill["impression"] in (False, 0, "false")
    if "impression" in columns and not filled_organic:
        return {}
    out = {} if "impression" in columns else {"impression": False}
    return out | ({} if "clicked" in columns else {"clicked": None})


def _warn_clicked_without_impression(
    table: str, available: list[str], setting: str, report: DataReport | None
) -> None:
    """A clicked column without an impression column makes an organic log whose every
    clicked value becomes missing: warned (log and report), naming the columns that differ
    from `impression` only in case or spaces (`Impression`, ` impression`), the usual cause."""
    near = [c for c in available if c != "impression" and c.strip().lower() == "impression"]
    hint = (
        f"column(s) {near} look like it: map it ({setting}.columns.impression={near[0]!r})"
        if near
        else f"map or fill {setting}.columns.impression if the log holds impressions"
    )
    message = (
        f"{table}: a clicked column but no impression column: every event is read as "
        f"organic and every clicked value becomes missing; {hint}"
    )
    logging.getLogger(__name__).warning("%s", message)
    if report is not None:
        report.note(message)


def _constant(value: Any, n: int) -> Any:
    """A column of n copies of `value`, compact for strings (one category)."""
    if value is None:
        return np.full(n, np.nan, dtype=np.float32)
    if isinstance(value, bool | int | float):
        return np.full(n, value)
    if isinstance(value, str):
        return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [value])
    return pd.Series([value], dtype=object).repeat(n).to_numpy()


def _ordered(table: str, columns: pd.Index) -> list[str]:
    contract = [c for c in CONTRACT_COLUMNS[table] if c in columns]
    return contract + [c for c in columns if c not in contract]
