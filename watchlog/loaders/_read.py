"""Delimited-file reading shared by the loaders: pyarrow's multi-threaded CSV reader.

Typed reads fail fast in pyarrow; when they do, the file is read again as text to
report *every* offending value (column, count, examples) as a `SchemaError`, the
same way validation reports problems, instead of pyarrow's first-error message.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from watchlog.schema import Problem, SchemaError

__all__ = ["read_delimited", "read_header"]

# Stands in for a multi-character separator ("::" in MovieLens 1M/10M) so pyarrow's
# single-character parser can split the file; a control character no text file uses.
_SEP_STANDIN = "\x1f"
_N_EXAMPLES = 5


def read_delimited(
    path: str | os.PathLike,
    *,
    delimiter: str,
    names: Sequence[str] | None = None,
    types: Mapping[str, pa.DataType] | None = None,
    include: Sequence[str] | None = None,
    encoding: str = "utf8",
    quoting: bool = True,
) -> pa.Table:
    """Read a delimited text file (compressed by suffix, e.g. .gz) into an Arrow table.

    `names` gives the column names of a header-less file (None: the first line is the
    header). `types` fixes column types (others are inferred); a value that does not
    convert raises `SchemaError` naming the file, column, count and examples. Empty
    strings are missing values. A multi-character `delimiter` is supported by
    substituting a single control character in memory (the file is read whole).
    """
    path = Path(path)
    source: str | io.BytesIO = str(path)
    if len(delimiter) > 1:
        raw = path.read_bytes()
        standin = _SEP_STANDIN.encode()
        if standin in raw:
            raise ValueError(f"{path}: contains byte 0x1f, cannot split on {delimiter!r}")
        source = io.BytesIO(raw.replace(delimiter.encode(encoding), standin))
        delimiter = _SEP_STANDIN
    read_opts = pacsv.ReadOptions(
        column_names=list(names) if names is not None else None, encoding=encoding
    )
    # Titles carry quote characters ("Shawshank..." 'n' all); MovieLens .dat/.item/.user
    # files never quote fields, so quoting is off for them.
    parse_opts = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False)
    convert = dict(
        include_columns=list(include) if include is not None else None,
        strings_can_be_null=True,
    )
    try:
        return pacsv.read_csv(
            source,
            read_options=read_opts,
            parse_options=parse_opts,
            convert_options=pacsv.ConvertOptions(column_types=dict(types or {}), **convert),
        )
    except pa.ArrowInvalid as err:
        if not types or "conversion error" not in str(err):
            raise ValueError(f"{path}: {err}") from err
        if isinstance(source, io.BytesIO):
            source.seek(0)
        text = pacsv.read_csv(
            source,
            read_options=read_opts,
            parse_options=parse_opts,
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in types}, **convert
            ),
        )
        problems = [p for c, t in types.items() if (p := _conversion_problem(path, text, c, t))]
        if not problems:
            raise ValueError(f"{path}: {err}") from err
        raise SchemaError(problems) from err


def read_header(
    path: str | os.PathLike, *, delimiter: str, encoding: str = "utf8", quoting: bool = True
) -> list[str]:
    """Column names of a delimited file with a header, reading only its first block."""
    reader = pacsv.open_csv(
        str(path),
        read_options=pacsv.ReadOptions(encoding=encoding),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False),
    )
    try:
        return list(reader.schema.names)
    finally:
        reader.close()


def _conversion_problem(
    path: Path, text: pa.Table, column: str, dtype: pa.DataType
) -> Problem | None:
    """The values of a text column that do not convert to `dtype` (numbers only)."""
    if column not in text.column_names:
        return None
    raw = text.column(column).to_pandas()
    num = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna().to_numpy() & num.isna().to_numpy()
    if pa.types.is_integer(dtype):
        values = num.to_numpy(dtype=float, na_value=np.nan)
        bad |= np.isfinite(values) & (values != np.floor(values))
    count = int(bad.sum())
    if count == 0:
        return None
    rows = np.flatnonzero(bad)[:_N_EXAMPLES]
    examples = [(int(r), raw.iloc[r]) for r in rows]
    return Problem(path.name, column, f"must be {dtype} (data row, value)", count, examples)
