"""Physical file lines of parsed delimited-text records, for messages (error paths only).

pyarrow numbers the records it parses (header = record 1) and skips blank lines; a quoted
field may span lines. Neither is a physical line, which is what an editor shows and what
the data contract promises, so the error paths map record numbers back to lines here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from watchlog.loaders._errors import raw_bytes
from watchlog.schema import Problem

__all__ = ["record_lines", "first_multiline_value", "physical_examples"]


def record_lines(
    raw: bytes, records: Iterable[int], *, delimiter: str, quote: str | None
) -> dict[int, int]:
    """{record number (1-based, as pyarrow counts them): the physical line it starts on}.

    Without quote characters a record is a non-blank line, found with numpy in one pass.
    With them a quoted field can hold line breaks, so records are walked with one regular
    expression match per record, up to the last one asked for (error paths only)."""
    wanted = sorted({int(r) for r in records if r is not None and r >= 1})
    if not wanted:
        return {}
    q = quote.encode() if quote else None
    if q is None or q not in raw:
        return _plain_record_lines(raw, wanted)
    d, qq = re.escape(delimiter.encode()), re.escape(q)
    # A field that opens with a quote runs to the closing quote ("" is a literal quote),
    # then to the delimiter; unclosed, it runs to the end of the file, as pyarrow reads it.
    # A quote inside an unquoted field is a literal character, as in pyarrow's parser.
    field = rb"(?:%s[^%s]*(?:%s%s[^%s]*)*(?:%s[^%s\r\n]*)?|[^%s\r\n]*)" % (
        qq, qq, qq, qq, qq, qq, d, d,
    )  # fmt: skip
    record = re.compile(rb"%s(?:%s%s)*(?:\r\n|\n|\r|\Z)" % (field, d, field))
    blank = re.compile(rb"(?:\r?\n)+")
    out: dict[int, int] = {}
    pos, line, number, last = 0, 1, 0, wanted[-1]
    while pos < len(raw) and number < last:
        skip = blank.match(raw, pos)
        if skip:  # blank lines are not records
            line += skip.group(0).count(b"\n")
            pos = skip.end()
            if pos >= len(raw):
                break
        m = record.match(raw, pos)
        number += 1
        out[number] = line
        line += m.group(0).count(b"\n")
        pos = m.end() if m.end() > pos else pos + 1
    return {r: out[r] for r in wanted if r in out}


def _plain_record_lines(raw: bytes, wanted: list[int]) -> dict[int, int]:
    arr = np.frombuffer(raw, dtype=np.uint8)
    breaks = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(arr)]])
    length = ends - starts
    first = arr[np.minimum(starts, max(len(arr) - 1, 0))] if len(arr) else np.zeros(0, np.uint8)
    blank = (length == 0) | ((length == 1) & (first == 13))  # "" or "\r" (CRLF files)
    lines = np.flatnonzero(~blank) + 1
    return {r: int(lines[r - 1]) for r in wanted if r <= len(lines)}


def first_multiline_value(table: pa.Table) -> tuple[int, str, str] | None:
    """(row, column, value) of the first text value holding a line break, or None.

    Vectorized per column (pyarrow compute); only the first hit is read into Python."""
    best: tuple[int, str, str] | None = None
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        hit = pc.fill_null(pc.match_substring(column, "\n"), False)
        if not pc.any(hit).as_py():
            continue
        row = int(pc.indices_nonzero(hit.combine_chunks())[0].as_py())
        if best is None or row < best[0]:
            best = (row, name, column[row].as_py())
    return best


def physical_examples(
    problems: list[Problem], files: Mapping[str, tuple[Path, str, str | None]]
) -> list[Problem]:
    """Problems whose examples name lines of a CSV file, with each line made physical.

    A CSV table is indexed by record number (data row i = record i + 2, what pyarrow
    counts), which is the file's line until a blank line or a quoted line break shifts it;
    here the records become lines, on the error path only. `files`: file name -> (path,
    delimiter, quote character or None)."""
    raw: dict[str, bytes] = {}
    out = []
    for p in problems:
        f = files.get(p.source or "")
        records = [r for r, _ in p.examples if isinstance(r, int)]
        if f is None or p.unit != "line" or not records:
            out.append(p)
            continue
        path, delimiter, quote = f
        if p.source not in raw:
            raw[p.source] = raw_bytes(str(path))
        lines = record_lines(raw[p.source], records, delimiter=delimiter, quote=quote)
        out.append(replace(p, examples=[(lines.get(r, r), v) for r, v in p.examples]))
    return out
