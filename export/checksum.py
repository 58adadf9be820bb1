"""A sha256 of the published rows, computed streaming, independent of how they were chunked.

Canonical form, column by column in export order, each column one or more byte streams over
all rows in publish order:

- `rank`: int32 little-endian; `course_id`: int64 LE, or strings (below); `score`: float64 LE
  (the IEEE 754 bits as written);
- `learner_id`, `source`, `model_version` come in long runs (a learner's list, a chunk), so
  they are taken as their maximal runs of equal values: the run's value, then the run's
  length as int64 LE in a stream of its own;
- a string value is its UTF-8 bytes, with its byte length (int32 LE) in a stream of its own.

The digest is sha256 over `ncf-glmix export rows v2`, then per column its name, its type and
the sha256 of each of its streams. Streams are concatenations (a run that reaches the end of
a chunk is held back until the next one tells whether it goes on), so a reader recomputes the
same digest from any chunking of the same rows (`rows_checksum`); hashing a few large
contiguous buffers keeps it cheap (hashlib releases the GIL for them).

Row order: the digest covers the rows in publish order, which a file version keeps but a SQL
table does not (PostgreSQL's COPY encoder even groups rows by label). `RowOrder` checks,
chunk by chunk, whether that order is the canonical one: learners in ascending id order
(integers by value, strings by their UTF-8 bytes, which is code point order), each learner's
rows contiguous and in ascending rank. The manifest records the answer as the checksum's
`order`: "learner_id, rank" (a SQL reader can recompute the digest from
`ORDER BY learner_id, rank`, see `export.sqlread`) or "publish" (only a file version, read in
its own order, verifies). `verify_rows` compares a version's rows with its manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "RowChecksum",
    "RowOrder",
    "ChecksumError",
    "rows_checksum",
    "verify_rows",
    "run_starts",
    "CANONICAL",
    "ORDER_CANONICAL",
    "ORDER_PUBLISH",
]

CANONICAL = (
    "sha256 over 'ncf-glmix export rows v2' and, per column in export order, its name, type "
    "and the sha256 of each of its streams, rows in the order the manifest's checksum 'order' "
    "names ('learner_id, rank': learners by ascending id, integers by value, strings by UTF-8 "
    "bytes, each learner's rows by rank; 'publish': as published): rank int32 LE, course_id "
    "int64 LE or string, score float64 LE; learner_id, source, model_version as maximal runs "
    "(value, then run length int64 LE in a stream of its own); a string is its UTF-8 bytes "
    "with its byte length int32 LE in a stream of its own"
)
_HEADER = b"ncf-glmix export rows v2"
_RUN_COLUMNS = ("learner_id", "source", "model_version")


def _string_streams(arr: pa.Array) -> tuple[np.ndarray, memoryview]:
    """(byte lengths, UTF-8 bytes) of an Arrow string array, without copying the characters."""
    offsets = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, 4 * arr.offset)
    data = arr.buffers()[2]
    payload = memoryview(data)[offsets[0] : offsets[-1]] if data is not None else memoryview(b"")
    return np.diff(offsets).astype("<i4", copy=False), payload


def run_starts(values: pa.Array) -> np.ndarray:
    """Start rows of the maximal runs of equal values of a non-empty array."""
    n = len(values)
    change = np.empty(n, dtype=bool)
    change[:1] = True
    if pa.types.is_integer(values.type):
        v = values.to_numpy(zero_copy_only=False)
        np.not_equal(v[1:], v[:-1], out=change[1:])
    else:
        change[1:] = pc.not_equal(values.slice(1), values.slice(0, n - 1)).to_numpy(
            zero_copy_only=False
        )
    return np.flatnonzero(change)


class _Values:
    """A column hashed value by value."""

    def __init__(self, field: pa.Field):
        self.string = pa.types.is_string(field.type)
        n = 2 if self.string else 1
        self.hashers = [hashlib.sha256() for _ in range(n)]
        if not self.string:
            self.dtype = np.dtype(field.type.to_pandas_dtype()).newbyteorder("<")

    def update(self, arr: pa.Array, starts: np.ndarray | None = None) -> None:
        if self.string:
            lengths, payload = _string_streams(arr)
            self.hashers[0].update(memoryview(np.ascontiguousarray(lengths)).cast("B"))
            self.hashers[1].update(payload)
        else:
            values = np.ascontiguousarray(arr.to_numpy(zero_copy_only=False), self.dtype)
            self.hashers[0].update(memoryview(values).cast("B"))

    def finish(self) -> None:
        pass


class _Runs:
    """A column hashed as its maximal runs: values (as `_Values` would) + run lengths."""

    def __init__(self, field: pa.Field):
        self.values = _Values(field)
        self.lengths = hashlib.sha256()
        self.hashers = [*self.values.hashers, self.lengths]
        self.pending: pa.Array | None = None  # the last run so far: one value
        self.count = 0

    def _emit(self, values: pa.Array, lengths: np.ndarray) -> None:
        self.values.update(values)
        self.lengths.update(memoryview(np.ascontiguousarray(lengths, "<i8")).cast("B"))

    def update(self, arr: pa.Array, starts: np.ndarray | None = None) -> None:
        """`starts`: the run starts of `arr` if the caller knows them already."""
        n = len(arr)
        if n == 0:
            return
        if starts is None:
            starts = run_starts(arr)
        lengths = np.diff(np.r_[starts, n]).astype(np.int64)
        values = arr.take(pa.array(starts))
        if self.pending is not None:
            if self.pending.equals(values.slice(0, 1)):
                lengths[0] += self.count  # the held-back run goes on in this chunk
            else:
                self._emit(self.pending, np.array([self.count]))
        self._emit(values.slice(0, len(values) - 1), lengths[:-1])
        self.pending, self.count = values.slice(len(values) - 1), int(lengths[-1])

    def finish(self) -> None:
        if self.pending is not None:
            self._emit(self.pending, np.array([self.count]))
            self.pending = None


class RowChecksum:
    """Feed Arrow tables of one schema with `update`; `hexdigest()` at the end."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self._columns = [(_Runs if f.name in _RUN_COLUMNS else _Values)(f) for f in schema]
        self._digest: str | None = None

    def update(self, table: pa.Table, runs: dict[str, np.ndarray] | None = None) -> None:
        """`runs`: run starts per column of a one-chunk table, when known (`ChunkView.runs`),
        so they are not found a second time."""
        if self._digest is not None:
            raise RuntimeError("RowChecksum: update after hexdigest")
        for f, column in zip(self.schema, self._columns, strict=True):
            chunks = table.column(f.name).chunks
            known = runs.get(f.name) if runs and len(chunks) == 1 else None
            for arr in chunks:
                column.update(arr, known)

    def hexdigest(self) -> str:
        if self._digest is None:
            out = hashlib.sha256(_HEADER)
            for f, column in zip(self.schema, self._columns, strict=True):
                column.finish()
                out.update(f"\0{f.name}\0{f.type}\0".encode())
                for h in column.hashers:
                    out.update(h.digest())
            self._digest = out.hexdigest()
        return self._digest


def rows_checksum(tables: Iterable[Any] | Any) -> str:
    """The checksum of rows read back (Arrow tables or record batches or pandas DataFrames,
    one or an iterable of them; any chunking, any integer / string widths: each is cast to
    the export schema first, as `publish` takes its chunks), for a reader to verify a
    version."""
    from export.rows import as_table, export_schema, to_arrow

    if isinstance(tables, pa.Table | pa.RecordBatch | pd.DataFrame):
        tables = [tables]
    check = None
    for t in tables:
        t = to_arrow(t, "rows")
        if check is None:
            kinds = [
                "int" if pa.types.is_integer(t.schema.field(c).type) else "str"
                for c in ("learner_id", "course_id")
            ]
            check = RowChecksum(export_schema(*kinds))
        check.update(as_table(t, check.schema, name="rows"))
    if check is None:
        raise ValueError("rows_checksum: no tables")
    return check.hexdigest()


ORDER_CANONICAL = "learner_id, rank"
ORDER_PUBLISH = "publish"


class ChecksumError(ValueError):
    """Rows read back do not hash to their manifest's checksum, or cannot be verified."""


class RowOrder:
    """Whether the published rows are in canonical order (module docstring), found chunk by
    chunk: `update(ids, starts, rank)` with a chunk's learner ids, the first row of each
    learner's run (runs of one learner are contiguous and in one chunk, `export.view`), and
    the ranks; `order` at the end. Vectorized per chunk; the first breach is kept for
    messages (`reason`)."""

    def __init__(self) -> None:
        self.canonical = True
        self.reason: str | None = None
        self._last: Any = None  # the previous chunk's last learner id

    def _breach(self, reason: str) -> None:
        self.canonical, self.reason = False, reason

    def update(self, ids: pa.Array, starts: np.ndarray, rank: np.ndarray) -> None:
        if not self.canonical or len(ids) == 0:
            return
        run_ids = ids.take(pa.array(starts))
        # Arrow compares strings by their bytes (UTF-8: code point order), integers by value
        down = pc.less_equal(run_ids.slice(1), run_ids.slice(0, len(run_ids) - 1))
        first, last = run_ids[0].as_py(), run_ids[len(run_ids) - 1].as_py()
        if self._last is not None and not self._last < first:
            self._breach(f"learner {first!r} follows {self._last!r}")
        elif pc.any(down).as_py():
            i = int(np.flatnonzero(down.to_numpy(zero_copy_only=False))[0])
            self._breach(f"learner {run_ids[i + 1].as_py()!r} follows {run_ids[i].as_py()!r}")
        else:
            # within a learner's run every rank above the one before it
            same = np.ones(len(rank), dtype=bool)
            same[starts] = False
            bad = np.flatnonzero(same[1:] & (rank[1:] <= rank[:-1]))
            if len(bad):
                row = int(bad[0]) + 1
                learner = ids[row].as_py()
                self._breach(f"learner {learner!r}'s ranks are not ascending (row {row})")
        self._last = last

    @property
    def order(self) -> str:
        return ORDER_CANONICAL if self.canonical else ORDER_PUBLISH


def verify_rows(tables: Iterable[Any] | Any, manifest: dict[str, Any], *, where: str) -> None:
    """Raise `ChecksumError` unless `tables` (rows read back, in the order the manifest's
    checksum was taken over) hash to the manifest's checksum; `where` names the version."""
    expected = manifest["checksum"]["hex"]
    try:
        actual = rows_checksum(tables)
    except ValueError as err:  # no tables at all
        raise ChecksumError(f"{where}: no rows were read back ({err})") from err
    if actual != expected:
        rows = manifest.get("counts", {}).get("rows")
        raise ChecksumError(
            f"{where}: the rows read back do not match the manifest's checksum (sha256 "
            f"{actual[:12]}... instead of {expected[:12]}...; the manifest counts {rows} rows): "
            "the version was altered, or read incompletely"
        )
