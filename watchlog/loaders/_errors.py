"""Errors of the delimited-file reader, and the checks of a file's bytes before it is read
(an encoding it is not in, UTF-16/32 read as UTF-8)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

__all__ = ["DataFileError", "check_not_wide", "not_encoded", "raw_bytes", "setting_key"]

SNIFF_BYTES = 64 * 1024


class DataFileError(ValueError):
    """A file the reader cannot take: the file, the line (1-based; None when the problem is
    the whole file), the rule it breaks and how to fix it."""

    def __init__(self, path: str | os.PathLike, line: int | None, rule: str, fix: str):
        self.path, self.line, self.rule, self.fix = Path(path), line, rule, fix
        where = f"{self.path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {rule}. Fix: {fix}")


def setting_key(setting: str | None, name: str) -> str:
    """How the caller sets option `name`: a config key when the caller gave its prefix."""
    return f"{setting}.{name}" if setting else name


def raw_bytes(source: str | io.BytesIO) -> bytes:
    """The file's bytes, decompressed by suffix as pyarrow does (on error paths only)."""
    if isinstance(source, io.BytesIO):
        return source.getvalue()
    with pa.input_stream(source) as stream:
        return stream.read()


def _first_undecodable(raw: bytes, encoding: str) -> tuple[int, int] | None:
    """(line, byte) of the first byte sequence `encoding` cannot decode, or None."""
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as err:
        return raw.count(b"\n", 0, err.start) + 1, raw[err.start]
    return None


def not_encoded(
    path: Path, raw: bytes, encoding: str, setting: str | None, columns: Sequence[str] = ()
) -> DataFileError | None:
    bad = _first_undecodable(raw, encoding)
    if bad is None:
        return None
    line, byte = bad
    where = f" (column(s) {list(columns)} would load as bytes)" if columns else ""
    return DataFileError(
        path,
        line,
        f"not {_shown(encoding)}: byte {byte:#04x} cannot be decoded{where}",
        f"set {setting_key(setting, 'encoding')}=latin-1 (or the file's encoding, e.g. cp1252), "
        "or save the file as UTF-8",
    )


_BOMS = (  # longest first: a UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32", "utf-32"),
    (b"\x00\x00\xfe\xff", "UTF-32", "utf-32"),
    (b"\xff\xfe", "UTF-16", "utf-16"),
    (b"\xfe\xff", "UTF-16", "utf-16"),
)


def check_not_wide(path: str | os.PathLike, encoding: str, setting: str | None) -> None:
    """A UTF-16/32 file read as UTF-8 (or another byte encoding) splits into fields of NUL
    bytes ("row has 1 fields ... '\\x00'"): its byte-order mark, or a NUL byte in the first
    block (no text file holds one), is named instead, with the encoding to set."""
    if encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32")):
        return
    with pa.input_stream(str(path)) as stream:
        head = stream.read(SNIFF_BYTES)
    fix = f"set {setting_key(setting, 'encoding')}=%s, or save the file as UTF-8"
    for bom, name, value in _BOMS:
        if head.startswith(bom):
            raise DataFileError(
                path, 1, f"not {_shown(encoding)} ({name} byte-order mark)", fix % value
            )
    nul = head.find(b"\x00")
    if nul >= 0:
        raise DataFileError(
            path,
            head.count(b"\n", 0, nul) + 1,
            f"not {_shown(encoding)}: NUL bytes (0x00), as in UTF-16 text without a byte-order "
            "mark",
            fix % "utf-16-le (or utf-16-be)",
        )


def _shown(encoding: str) -> str:
    return encoding.upper().replace("UTF8", "UTF-8")
