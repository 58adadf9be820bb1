"""Arrow tables -> PostgreSQL binary COPY bytes, built with numpy (no Python object per row).

Binary COPY: a header, then per row an int16 field count and per field an int32 byte length
and the value in network byte order (int8 / int4 / float8 as big-endian, text as UTF-8
bytes), then the trailer -1. `COPY` takes rows in any order, which the fast path uses (a table keeps
no row order anyway: readers verify it ordered by learner_id, rank, `export.sqlread`):

- fast path: rows are grouped by their combination of string values (`source` and
  `model_version` have a handful of values, integer ids none); within a group every row has
  the same layout, so one numpy structured array per group holds it, filled column by column
  (a byte-swapping copy), the constant strings broadcast;
- general path (string ids, or many distinct labels in a batch): each row's byte offset comes
  from the cumulative field lengths and every field is scattered at its offsets; string bytes
  are copied from Arrow's contiguous character buffer with one index array.

Both run on batches of `batch_rows` rows (64k rows, a few MB: cache-sized, measured fastest)
so the encoded copy of a chunk stays small.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from export.view import label_codes

__all__ = ["HEADER", "TRAILER", "encode_binary"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = b"\xff\xff"
_FIXED = {"int64": ">i8", "int32": ">i4", "double": ">f8"}


def encode_binary(
    table: pa.Table, *, batch_rows: int = 1 << 16, max_groups: int = 64
) -> Iterator[memoryview]:
    """Binary COPY row data of `table` (no header or trailer), in pieces."""
    for start in range(0, table.num_rows, batch_rows):
        batch = table.slice(start, batch_rows)
        fast = _grouped(batch, max_groups)
        yield from (fast if fast is not None else _general(batch, 1 << 16))


def _strings(arr: pa.Array) -> tuple[np.ndarray | None, list[bytes]]:
    """(label code per row, or None for a single label; the labels as UTF-8)."""
    starts, codes, labels = label_codes(arr)
    per_row = np.repeat(codes, np.diff(np.r_[starts, len(arr)])) if len(labels) > 1 else None
    return per_row, [s.encode() for s in labels]


def _grouped(table: pa.Table, max_groups: int) -> list[memoryview] | None:
    """The fast path, or None when the string columns have too many value combinations."""
    n_cols = table.num_columns
    cols = [table.column(i).combine_chunks() for i in range(n_cols)]
    is_str = [pa.types.is_string(c.type) for c in cols]
    codes, labels, combo, n_combos = {}, {}, None, 1
    for i, c in enumerate(cols):
        if is_str[i]:
            codes[i], labels[i] = _strings(c)
            n_combos *= max(len(labels[i]), 1)
            if n_combos > max_groups:
                return None
            if codes[i] is not None:
                combo = codes[i] if combo is None else combo * len(labels[i]) + codes[i]
            elif combo is not None:
                combo = combo * len(labels[i])  # a single label: its code is 0
    values = {i: c.to_numpy(zero_copy_only=False) for i, c in enumerate(cols) if not is_str[i]}
    if combo is None:
        groups = [(0, None)]  # every string column holds one label
    else:
        present = np.flatnonzero(np.bincount(combo, minlength=n_combos))
        groups = [(g, None if len(present) == 1 else np.flatnonzero(combo == g)) for g in present]
    out = []
    for g, rows in groups:
        # the label of column i in combination g (mixed radix, last string column fastest)
        chosen, rest = {}, g
        for i in reversed(range(n_cols)):
            if is_str[i]:
                rest, chosen[i] = divmod(rest, len(labels[i]))
        fields = [("count", ">i2")]
        for i, c in enumerate(cols):
            fields.append((f"len{i}", ">i4"))
            if is_str[i]:
                size = len(labels[i][chosen[i]])
                if size:
                    fields.append((f"val{i}", f"S{size}"))
            else:
                fields.append((f"val{i}", _FIXED[str(c.type)]))
        n = len(table) if rows is None else len(rows)
        rec = np.empty(n, dtype=np.dtype(fields))
        rec["count"] = n_cols
        for i in range(n_cols):
            if is_str[i]:
                text = labels[i][chosen[i]]
                rec[f"len{i}"] = len(text)
                if text:
                    rec[f"val{i}"] = text
            else:
                rec[f"len{i}"] = rec.dtype[f"val{i}"].itemsize
                rec[f"val{i}"] = values[i] if rows is None else values[i][rows]
        out.append(memoryview(rec.view(np.uint8)))
    return out


def _scatter(out: np.ndarray, pos: np.ndarray, data: np.ndarray) -> None:
    """out[pos[r] + j] = data[r, j] for every row r and byte j."""
    out[pos[:, None] + np.arange(data.shape[1])] = data


def _general(table: pa.Table, batch_rows: int) -> Iterator[memoryview]:
    for start in range(0, table.num_rows, batch_rows):
        batch = table.slice(start, batch_rows)
        n = batch.num_rows
        cols = [c.combine_chunks() for c in batch.columns]
        sizes, parts = [], []
        for c in cols:
            if pa.types.is_string(c.type):
                offsets = np.frombuffer(c.buffers()[1], np.int32, n + 1, 4 * c.offset).astype(
                    np.int64
                )
                lengths = np.diff(offsets)
                data = c.buffers()[2]
                chars = (
                    np.frombuffer(data, np.uint8)[offsets[0] : offsets[-1]]
                    if data is not None
                    else np.zeros(0, np.uint8)
                )
                parts.append(("str", lengths, offsets - offsets[0], chars))
                sizes.append(4 + lengths)
            else:
                dtype = np.dtype(_FIXED[str(c.type)])
                raw = c.to_numpy(zero_copy_only=False).astype(dtype).view(np.uint8)
                parts.append(("fixed", dtype.itemsize, None, raw.reshape(n, dtype.itemsize)))
                sizes.append(np.full(n, 4 + dtype.itemsize, dtype=np.int64))
        row_size = 2 + np.sum(sizes, axis=0)
        row_start = np.r_[0, np.cumsum(row_size)[:-1]]
        out = np.empty(int(row_size.sum()), dtype=np.uint8)
        _scatter(out, row_start, np.tile(np.array([len(cols)], ">i2").view(np.uint8), (n, 1)))
        pos = row_start + 2
        for kind, size, rel, data in parts:
            length = (size if kind == "str" else np.full(n, size)).astype(">i4")
            _scatter(out, pos, length.view(np.uint8).reshape(n, 4))
            if kind == "fixed":
                _scatter(out, pos + 4, data)
                pos = pos + 4 + size
            else:
                if len(data):
                    dest = np.repeat(pos + 4 - rel[:-1], size) + np.arange(len(data))
                    out[dest] = data
                pos = pos + 4 + size
        yield memoryview(out)
