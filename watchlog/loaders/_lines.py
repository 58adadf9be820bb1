"""Physical file lines of parsed delimited-text records, for messages (error paths only).

pyarrow numbers the records it parses (header = record 1) and skips blank lines; a quoted
field may span lines. Neither is a physical line, which is what an editor shows and what
the data contract promises, so the error paths map record numbers back to lines here.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from watchlog.loaders._errors import raw_bytes
from watchlog.schema import Problem

__all__ = [
    "count_records", "file_blocks", "first_spanning_record", "physical_examples", "record_lines",
]  # fmt: skip


_BREAK = re.compile(rb"\r\n|\n|\r")  # a line end, as pyarrow reads them


def _records(raw: bytes, delimiter: str, quote: str) -> Iterator[tuple[int, int, bytes]]:
    """(record number from 1, the physical line it starts on, its text without the line end)
    of every record of a file with quote characters, walked with one regular expression
    match per record (error paths only)."""
    d, qq = re.escape(delimiter.encode()), re.escape(quote.encode())
    # A field that opens with a quote runs to the closing quote ("" is a literal quote),
    # then to the delimiter; unclosed, it runs to the end of the file, as pyarrow reads it.
    # A quote inside an unquoted field is a literal character, as in pyarrow's parser.
    field = rb"(?:%s[^%s]*(?:%s%s[^%s]*)*(?:%s[^%s\r\n]*)?|[^%s\r\n]*)" % (
        qq, qq, qq, qq, qq, qq, d, d,
    )  # fmt: skip
    record = re.compile(rb"(%s(?:%s%s)*)(?:\r\n|\n|\r|\Z)" % (field, d, field))
    blank = re.compile(rb"(?:\r\n|\n|\r)+")
    pos, line, number = 0, 1, 0
    while pos < len(raw):
        skip = blank.match(raw, pos)
        if skip:  # blank lines are not records
            line += len(_BREAK.findall(skip.group(0)))
            pos = skip.end()
            if pos >= len(raw):
                break
        m = record.match(raw, pos)
        number += 1
        yield number, line, m.group(1)
        line += len(_BREAK.findall(m.group(0)))
        pos = m.end() if m.end() > pos else pos + 1


def record_lines(
    raw: bytes, records: Iterable[int], *, delimiter: str, quote: str | None
) -> dict[int, int]:
    """{record number (1-based, as pyarrow counts them): the physical line it starts on}.

    Without quote characters a record is a non-blank line, found with numpy in one pass.
    With them a quoted field can hold line breaks, so records are walked (`_records`) up to
    the last one asked for (error paths only)."""
    wanted = sorted({int(r) for r in records if r is not None and r >= 1})
    if not wanted:
        return {}
    if not quote or quote.encode() not in raw:
        lines = np.flatnonzero(_line_lengths(raw) > 0) + 1  # (records,) their lines
        return {r: int(lines[r - 1]) for r in wanted if r <= len(lines)}
    out: dict[int, int] = {}
    for number, line, _ in _records(raw, delimiter, quote):
        out[number] = line
        if number >= wanted[-1]:
            break
    return {r: out[r] for r in wanted if r in out}


def _line_lengths(raw: bytes) -> np.ndarray:
    """(physical lines,) bytes of each line without its end (\r\n, \n or a lone \r)."""
    arr = np.frombuffer(raw, dtype=np.uint8)
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.int64)
    nl, cr = arr == 10, arr == 13
    lone_cr = cr.copy()
    lone_cr[:-1] &= ~nl[1:]  # a \r followed by \n is part of a \r\n end
    ends = np.flatnonzero(nl | lone_cr)  # (lines ended,) the last byte of each end
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [n]])
    length = (stops - starts).astype(np.int64)
    crlf = (arr[ends] == 10) & (ends > 0) & cr[np.maximum(ends - 1, 0)]
    length[:-1] -= crlf  # the \r of a \r\n end is no content
    return length


def count_records(blocks: Iterable[bytes]) -> int:
    """The records a file parses into when no field spans lines: its non-blank lines, from
    its bytes in consecutive blocks (memory: one block). Line ends \n or \r\n are counted
    with numpy on the \n positions, block by block (a partial last line carries over); a
    file with a lone \r end (old Mac exports) is counted on its whole bytes instead."""
    records, carry = 0, b""
    blocks = iter(blocks)  # a recount below takes the blocks not read yet
    for block in blocks:
        buf = carry + block  # (partial line + block,) one copy of a block
        if not buf:
            continue
        arr = np.frombuffer(buf, dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)  # (lines ended,) the \n of each
        if not len(ends):
            carry = buf
            continue
        starts = np.concatenate([[0], ends[:-1] + 1])
        length = ends - starts
        cr_end = (length > 0) & (arr[np.maximum(ends - 1, 0)] == 13)  # the \r of \r\n
        last = int(ends[-1]) + 1
        if buf.find(b"\r", 0, last) != -1 and buf.count(b"\r", 0, last) != int(cr_end.sum()):
            return records + _count_whole(buf, blocks)  # a lone \r ends a line here
        records += int(((length - cr_end) > 0).sum())
        carry = buf[last:]
    if b"\r" in carry:
        return records + _count_whole(carry, ())
    return records + (len(carry) > 0)


def file_blocks(source: str | io.BytesIO, encoding: str, size: int = 1 << 24) -> Iterator[bytes]:
    """The file's bytes (decompressed by suffix, as pyarrow reads it) in blocks of `size`;
    for an encoding whose line ends are not the bytes 10 / 13 (UTF-16, UTF-32), the whole
    file transcoded to UTF-8 as one block."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        yield raw_bytes(source).decode(encoding, "replace").encode("utf-8")
        return
    if isinstance(source, io.BytesIO):
        view = source.getbuffer()
        for lo in range(0, len(view), size):
            yield bytes(view[lo : lo + size])
        return
    with pa.input_stream(source) as stream:
        while block := stream.read(size):
            yield block


def _count_whole(head: bytes, rest: Iterable[bytes]) -> int:
    """Records of `head` plus the remaining blocks, with lone \r line ends (whole bytes)."""
    return int((_line_lengths(head + b"".join(rest)) > 0).sum())


def first_spanning_record(raw: bytes, *, delimiter: str, quote: str) -> tuple[int, int, str] | None:
    """(line, line breaks, text) of the first record that spans lines (a quoted field with a
    line break in it), or None. Error paths only: one regular expression match per record."""
    for _, line, text in _records(raw, delimiter, quote):
        breaks = len(_BREAK.findall(text))
        if breaks:
            return line, breaks, text.decode("utf-8", "replace")
    return None


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
