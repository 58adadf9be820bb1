"""Delimited-file reading shared by the loaders: pyarrow's multi-threaded CSV reader.

Typed reads fail fast in pyarrow; when they do, the file is read again as text to
report *every* offending value (column, count, examples) as a `SchemaError`, the
same way validation reports problems, instead of pyarrow's first-error message.

A file pyarrow cannot take as it is (empty, a row with the wrong number of fields, a stray
quote, bytes that are not in the encoding) raises `DataFileError`, which names the file, the
line as an editor counts it (1-based, the header is line 1), the rule and the fix.
The line is found by a second, single-threaded pass over the file, on error only.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from watchlog.loaders._errors import (
    SNIFF_BYTES,
    DataFileError,
    check_not_wide,
    not_encoded,
    raw_bytes,
    setting_key,
)
from watchlog.loaders._lines import (
    count_records,
    file_blocks,
    first_spanning_record,
    record_lines,
)
from watchlog.schema import Problem, SchemaError

__all__ = ["DataFileError", "detect_delimiter", "read_delimited", "read_header"]

# Stands in for a multi-character separator ("::" in MovieLens 1M/10M) so pyarrow's
# single-character parser can split the file; a control character no text file uses.
_SEP_STANDIN = "\x1f"
_N_EXAMPLES = 5
# Delimiters `detect_delimiter` chooses among, in order of preference on a tie.
DELIMITER_CANDIDATES = (",", ";", "\t", "|")


def detect_delimiter(path: str | os.PathLike, default: str) -> str:
    """The delimiter of a file's header line: the most frequent of DELIMITER_CANDIDATES in its
    first line (ties: the earlier candidate), `default` when the line has none of them."""
    with pa.input_stream(str(path)) as stream:
        head = stream.read(SNIFF_BYTES)
    first = head.split(b"\n", 1)[0]
    counts = {c: first.count(c.encode()) for c in DELIMITER_CANDIDATES}
    best = max(DELIMITER_CANDIDATES, key=lambda c: (counts[c], c == default))
    return best if counts[best] else default


def read_delimited(
    path: str | os.PathLike,
    *,
    delimiter: str,
    names: Sequence[str] | None = None,
    types: Mapping[str, pa.DataType] | None = None,
    exact_text: Sequence[str] = (),
    include: Sequence[str] | None = None,
    encoding: str = "utf8",
    quoting: bool = True,
    multiline: bool = False,
    setting: str | None = None,
) -> pa.Table:
    """Read a delimited text file (compressed by suffix, e.g. .gz) into an Arrow table.

    `names` gives the column names of a header-less file (None: the first line is the
    header). `types` fixes column types (others are inferred); a value that does not
    convert raises `SchemaError` naming the file, column, count and examples (as file
    lines). Empty fields are missing values, and so are pyarrow's null spellings (NA, null,
    nan, N/A, ...) except in the `exact_text` columns (typed string in `types`), where they
    are text as written. A multi-character `delimiter` is supported
    by substituting a single control character in memory (the file is read whole).
    An empty file, a ragged row or bytes not in `encoding` raise `DataFileError`;
    `setting` (e.g. "data.source.events") is the config prefix its fix names.

    With `quoting`, a field opening with '"' runs to the closing '"' (delimiters and line
    breaks inside are text; a quote inside an unquoted field is a literal character). A
    quoted field spanning lines is a `DataFileError` naming the line it opens on unless
    `multiline`: a stray '"' would otherwise swallow every later row without an error.
    """
    path = Path(path)
    check_not_wide(path, encoding, setting)
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
    parse_opts = pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if quoting else False,
        newlines_in_values=quoting and multiline,
    )
    convert = dict(
        include_columns=list(include) if include is not None else None,
        strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(
            source,
            read_options=read_opts,
            parse_options=parse_opts,
            convert_options=pacsv.ConvertOptions(column_types=dict(types or {}), **convert),
        )
    except pa.ArrowInvalid as err:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        if not types or "conversion error" not in str(err) or "UTF8" in str(err):
            raise _file_error(path, source, err, read_opts, parse_opts, encoding, setting) from err
        text = pacsv.read_csv(
            source,
            read_options=read_opts,
            parse_options=parse_opts,
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in types}, **convert
            ),
        )
        first_line = 1 if names is not None else 2
        problems = [
            p for c, t in types.items() if (p := _conversion_problem(path, text, c, t, first_line))
        ]
        if not problems:
            raise ValueError(f"{path}: {err}") from err
        raise SchemaError(problems) from err
    # Bytes that are not in the encoding make pyarrow type the column as binary: ids would
    # load as b'c1' and fail far later as unknown ids.
    binary = [
        f.name
        for f in table.schema
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
    ]
    if binary:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        bad = not_encoded(path, raw_bytes(source), encoding, setting, binary)
        if bad is not None:
            raise bad
    table = _exact_text(table, source, read_opts, parse_opts, exact_text, convert)
    if quoting and not multiline:
        first = 1 if names is not None else 2
        _check_multiline(path, source, table, parse_opts, first, encoding, setting)
    return table


def _exact_text(
    table: pa.Table,
    source: str | io.BytesIO,
    read_opts: pacsv.ReadOptions,
    parse_opts: pacsv.ParseOptions,
    columns: Sequence[str],
    convert: dict,
) -> pa.Table:
    """`columns` with their nulls read again with only the empty field as missing: pyarrow
    has one list of null spellings for all columns, and a learner called NA is not a missing
    id. Only columns that have nulls are read again (none, in most files)."""
    again = [c for c in columns if c in table.column_names and table.column(c).null_count]
    if not again:
        return table
    if isinstance(source, io.BytesIO):
        source.seek(0)
    exact = pacsv.read_csv(
        source,
        read_options=read_opts,
        parse_options=parse_opts,
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in again},
            null_values=[""],
            **{**convert, "include_columns": again},
        ),
    )
    for c in again:
        table = table.set_column(table.column_names.index(c), c, exact.column(c))
    return table


def _check_multiline(
    path: Path,
    source: str | io.BytesIO,
    table: pa.Table,
    parse_opts: pacsv.ParseOptions,
    first_record: int,
    encoding: str,
    setting: str | None,
) -> None:
    """A quoted field that spans lines is almost always a stray '"' that swallowed the rows
    after it (the row count would silently shrink), so it is an error unless the spec allows
    multi-line fields. Found by counting: the records parsed (header included) against the
    file's non-blank lines, in every column whether read or not, one numpy pass; only when
    they differ is the file walked record by record to name the line. The count streams the
    file in 16 MB blocks (memory: one block), 0.1 s per 144 MB."""
    if table.num_rows + first_record - 1 >= count_records(file_blocks(source, encoding)):
        return
    raw = raw_bytes(source)
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        raw = raw.decode(encoding, "replace").encode("utf-8")  # line ends as UTF-8 bytes
    hit = first_spanning_record(raw, delimiter=parse_opts.delimiter, quote=parse_opts.quote_char)
    line, breaks, text = hit if hit is not None else (None, 0, "")
    raise _unclosed_quote(path, line, breaks, text, setting)


def _unclosed_quote(
    path: Path, line: int | None, breaks: int, text: str, setting: str | None
) -> DataFileError:
    return DataFileError(
        path,
        line,
        f"a quoted field opens on this line and runs over {breaks} line break(s) "
        f"({text[:80]!r}); a stray '\"' swallows every row after it",
        'remove the stray quote (or double it: "" is a literal quote inside a quoted field); '
        f"if the file's quotes are literal text, set {setting_key(setting, 'quoting')}=false; if its "
        f"fields really span lines, set {setting_key(setting, 'multiline')}=true",
    )


def read_header(
    path: str | os.PathLike,
    *,
    delimiter: str,
    encoding: str = "utf8",
    quoting: bool = True,
    multiline: bool = False,
    setting: str | None = None,
) -> list[str]:
    """Column names of a delimited file with a header, reading only its first block.

    Raises `DataFileError` for an empty file, a ragged row in that block, or a header
    that does not decode (`setting`: the config prefix the fix names)."""
    check_not_wide(path, encoding, setting)
    read_opts = pacsv.ReadOptions(encoding=encoding)
    parse_opts = pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if quoting else False,
        newlines_in_values=quoting and multiline,
    )
    try:
        reader = pacsv.open_csv(str(path), read_options=read_opts, parse_options=parse_opts)
    except pa.ArrowInvalid as err:
        raise _file_error(
            Path(path), str(path), err, read_opts, parse_opts, encoding, setting
        ) from err
    try:
        names = list(reader.schema.names)
    finally:
        reader.close()
    if any("\ufffd" in n for n in names):  # pyarrow replaces undecodable header bytes
        bad = not_encoded(Path(path), raw_bytes(str(path)), encoding, setting)
        if bad is not None:
            raise bad
    return names


def _file_error(
    path: Path,
    source: str | io.BytesIO,
    err: pa.ArrowInvalid,
    read_opts: pacsv.ReadOptions,
    parse_opts: pacsv.ParseOptions,
    encoding: str,
    setting: str | None,
) -> Exception:
    """pyarrow's first-error message as a `DataFileError` with the file line, when known."""
    message = str(err)
    if "Empty CSV file" in message:
        return DataFileError(
            path,
            1,
            "the file is empty (a table needs a header line and at least one data row)",
            "check the path, or export the table again with its header",
        )
    if "UTF8" in message:
        bad = not_encoded(path, raw_bytes(source), encoding, setting)
        if bad is not None:
            return bad
    if re.search(r"Expected \d+ columns, got \d+", message):
        ragged = _ragged_rows(source, read_opts, parse_opts)
        if ragged and "\n" in ragged[0][3] and not parse_opts.newlines_in_values:
            line, _, _, text = ragged[0]
            return _unclosed_quote(path, line, text.count("\n"), text, setting)
        if ragged:
            line, expected, actual, text = ragged[0]
            others = (
                f"; {len(ragged) - 1:,} more such line(s), e.g. line(s) "
                + ", ".join(str(r[0]) for r in ragged[1 : 1 + _N_EXAMPLES])
                if len(ragged) > 1
                else ""
            )
            delim = parse_opts.delimiter
            return DataFileError(
                path,
                line,
                f"row has {actual} fields, the header has {expected} "
                f"(delimiter {delim!r}): {text[:80]!r}{others}",
                f"quote the fields that contain {delim!r}, or remove the extra fields; "
                f"if the file uses another delimiter, set {setting_key(setting, 'delimiter')}",
            )
    return ValueError(f"{path}: {err}")


def _ragged_rows(
    source: str | io.BytesIO, read_opts: pacsv.ReadOptions, parse_opts: pacsv.ParseOptions
) -> list[tuple[int, int, int, str]]:
    """(line, expected fields, fields, text) of every row with the wrong field count, the
    line physical (1-based; blank lines and quoted line breaks counted). One thread: pyarrow
    numbers a row's record only then; `record_lines` turns records into lines."""
    found: list[tuple[int, int, int, str]] = []

    def handler(row) -> str:
        found.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    if isinstance(source, io.BytesIO):
        source.seek(0)
    opts = pacsv.ReadOptions(
        column_names=read_opts.column_names,
        encoding=read_opts.encoding,
        use_threads=False,
        block_size=read_opts.block_size,
    )
    parse = pacsv.ParseOptions(
        delimiter=parse_opts.delimiter,
        quote_char=parse_opts.quote_char,
        newlines_in_values=parse_opts.newlines_in_values,
        invalid_row_handler=handler,
    )
    # Another problem past the ragged rows: the first ragged row is still the answer.
    with contextlib.suppress(pa.ArrowInvalid):
        pacsv.read_csv(source, read_options=opts, parse_options=parse)
    found = [r for r in found if r[0] is not None]
    if not found:
        return found
    # pyarrow counts records (column_names given: the first line is record 1 all the same)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    lines = record_lines(
        raw_bytes(source),
        [r[0] for r in found],
        delimiter=parse_opts.delimiter,
        quote=parse_opts.quote_char or None,
    )
    return [(lines.get(r[0], r[0]), *r[1:]) for r in found]


def _conversion_problem(
    path: Path, text: pa.Table, column: str, dtype: pa.DataType, first_line: int
) -> Problem | None:
    """The values of a text column that do not convert to `dtype` (numbers only), with the
    file line of each example (`first_line`: the line of data row 0)."""
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
    examples = [(int(r) + first_line, raw.iloc[r]) for r in rows]
    return Problem(
        path.name, column, f"must be {dtype}", count, examples, unit="line", source=path.name
    )
