"""The exported rows and their contract, checked on every chunk as it arrives.

    learner_id | rank | course_id | score | source | model_version

- `learner_id`, `course_id`: the caller's ids, integer (written as int64) or string, never
  missing, of the same kind as the learner table's / catalogue's ids;
- `rank`: integer (written as int32); 1..K per learner is a quality gate (`export.gates`);
- `score`: floating point (written as float64); NaN, missing or infinite values are left to the
  `scores` gate, which names them, instead of failing here;
- `source` (which path produced the list: "blend", "two_tower", "popular_segment", ...) and
  `model_version`: strings, never missing;
- a pandas object column is taken when it holds strings only (pandas 2's default for text);
- no string (ids included) holds a NUL character: PostgreSQL text cannot store one;
- no other columns: a blender's extra score columns are dropped by the caller, on purpose;
- chunks hold whole learners, a learner's rows contiguous and in rank order (checked where
  the learners are mapped to dense indices, `export.view`).

A contract breach is a `RowError` raised at once (the export stops, nothing is published);
quality problems of well-formed rows are gate failures, counted over the whole stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "LEARNER",
    "COURSE",
    "RANK",
    "SCORE",
    "SOURCE",
    "MODEL_VERSION",
    "COLUMNS",
    "RowError",
    "EmptyInputError",
    "id_kind",
    "export_schema",
    "as_table",
    "to_arrow",
    "iter_tables",
]

# The id columns are named as in watchlog.candidates (the table every stage passes on); not
# imported from there: `import watchlog` loads scikit-learn (~2 s), too much for a publisher.
LEARNER, COURSE = "learner_id", "course_id"
RANK, SCORE, SOURCE, MODEL_VERSION = "rank", "score", "source", "model_version"
COLUMNS = (LEARNER, RANK, COURSE, SCORE, SOURCE, MODEL_VERSION)
_ID_TYPES = {"int": pa.int64(), "str": pa.string()}
_N_EXAMPLES = 5


class RowError(ValueError):
    """A chunk breaks the row contract (see the module docstring)."""


class EmptyInputError(RowError):
    """The stream held no rows. Nothing is published: an empty version would blank every
    learner's list in the services that read it."""


def id_kind(index: pd.Index, name: str) -> str:
    """'int' or 'str': the kind of a set of caller ids (object ids must all be str)."""
    dtype = index.dtype
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_string_dtype(dtype):
        inferred = pd.api.types.infer_dtype(index, skipna=False)
        if inferred in ("string", "empty"):
            return "str"
    raise RowError(f"{name}: ids must be integers or strings, got {dtype}")


def export_schema(learner_kind: str, course_kind: str) -> pa.Schema:
    """The Arrow schema every sink writes, given the kinds of the learner and course ids."""
    return pa.schema(
        [
            pa.field(LEARNER, _ID_TYPES[learner_kind], nullable=False),
            pa.field(RANK, pa.int32(), nullable=False),
            pa.field(COURSE, _ID_TYPES[course_kind], nullable=False),
            pa.field(SCORE, pa.float64(), nullable=False),
            pa.field(SOURCE, pa.string(), nullable=False),
            pa.field(MODEL_VERSION, pa.string(), nullable=False),
        ]
    )


def to_arrow(chunk: Any, name: str) -> pa.Table:
    """A chunk (DataFrame, Arrow Table or RecordBatch) as an Arrow table, types unchecked."""
    if isinstance(chunk, pa.Table):
        return chunk
    if isinstance(chunk, pa.RecordBatch):
        return pa.Table.from_batches([chunk])
    if isinstance(chunk, pd.DataFrame):
        for column in chunk.columns:
            if pd.api.types.is_object_dtype(chunk[column].dtype):
                _check_object_strings(chunk[column], f"{name}.{column}")
        return pa.Table.from_pandas(chunk, preserve_index=False)
    raise RowError(
        f"{name}: expected a pandas DataFrame or an Arrow table, got {type(chunk).__name__}"
    )


def _check_object_strings(col: pd.Series, where: str) -> None:
    """An object column is taken when its values are strings (missing ones are named by the
    missing-value check): pandas 2 gives object for every string column of an ordinary
    DataFrame and for Arrow strings read back with `to_pandas()`. Anything else (numbers
    stored as objects, a mix) would reach Arrow as an unnamed conversion error, so it is
    named here, with counts and examples (a per-value scan, on the error path only)."""
    if pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
        return
    other = ~col.map(lambda v: isinstance(v, str)).to_numpy(bool) & col.notna().to_numpy()
    rows = np.flatnonzero(other)
    examples = col.iloc[rows[:_N_EXAMPLES]].tolist()
    raise RowError(
        f"{where}: an object column must hold strings only (ids and labels are integers or "
        f"strings, one kind per column); {len(rows):,} of {len(col):,} rows hold other values "
        f"(e.g. rows {rows[:_N_EXAMPLES].tolist()}: {examples!r}); convert the column to one "
        "kind, e.g. frame[column].astype('string') or .astype('int64')"
    )


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _null_examples(table: pa.Table, column: str) -> list[int]:
    mask = table.column(column).is_null().to_numpy(zero_copy_only=False)
    return np.flatnonzero(mask)[:_N_EXAMPLES].tolist()


def _check_no_nul(col: pa.ChunkedArray, where: str) -> None:
    """A NUL character would pass every gate and then fail PostgreSQL's COPY with an encoding
    error naming no column; here it is named, counted and shown. A scan of the raw character
    bytes (much faster than a string search) rules it out in the usual case."""
    data = [c.buffers()[2] for c in col.chunks]
    if all(d is None or np.frombuffer(d, np.uint8).all() for d in data):
        return
    found = pc.match_substring(col, "\x00").to_numpy(zero_copy_only=False)
    if found.any():
        rows = np.flatnonzero(found)
        examples = [col[int(i)].as_py() for i in rows[:_N_EXAMPLES]]
        raise RowError(
            f"{where}: values must not contain a NUL character (\\x00; PostgreSQL cannot "
            f"store it); {len(rows):,} of {len(col):,} rows do (e.g. rows "
            f"{rows[:_N_EXAMPLES].tolist()}: {examples})"
        )


def _check_integer_range(col: pa.ChunkedArray, field: pa.Field, name: str) -> None:
    """Integers outside `field`'s type (a rank of 3e9 for int32, a uint64 id above 2**63-1)
    named with counts and examples; Arrow's cast error names neither."""
    info = np.iinfo(field.type.to_pandas_dtype())
    values = col.to_numpy()  # no nulls here: checked before
    outside = (values < info.min) | (values > info.max)  # numpy 2 compares mixed signs exactly
    if outside.any():
        rows = np.flatnonzero(outside)
        raise RowError(
            f"{name}.{field.name}: values must fit {field.type} ({info.min:,} to {info.max:,}); "
            f"{len(rows):,} of {len(values):,} rows do not (e.g. rows "
            f"{rows[:_N_EXAMPLES].tolist()}: {values[rows[:_N_EXAMPLES]].tolist()})"
        )


def as_table(chunk: Any, schema: pa.Schema, *, name: str = "chunk") -> pa.Table:
    """`chunk` (DataFrame, Arrow Table or RecordBatch) as an Arrow table of `schema`, its
    columns in export order; raises `RowError` naming the column, the rule and examples."""
    table = to_arrow(chunk, name)
    have = list(table.column_names)
    missing = [c for c in COLUMNS if c not in have]
    extra = [c for c in have if c not in COLUMNS]
    if missing or extra:
        raise RowError(
            f"{name}: the export rows are exactly {list(COLUMNS)}; missing {missing}, "
            f"unexpected {extra} (select the export columns before publishing)"
        )
    if table.num_rows == 0:
        # no values to check: an empty DataFrame's columns are untyped (object, then Arrow
        # `null`), and the stream's emptiness is what `publish` reports (EmptyInputError)
        return schema.empty_table()
    columns = []
    for field in schema:
        col = table.column(field.name)
        t = col.type
        if field.name != SCORE and col.null_count:
            # before the type checks: a column of missing values only (pandas 2's object
            # column of None) arrives typed `null`, and "missing" is what is wrong with it
            raise RowError(
                f"{name}.{field.name}: values must not be missing; {col.null_count:,} of "
                f"{len(col):,} rows are (e.g. rows {_null_examples(table, field.name)})"
            )
        if field.name in (LEARNER, COURSE):
            want = "integer" if pa.types.is_integer(field.type) else "string"
            ok = pa.types.is_integer(t) if want == "integer" else _is_string(t)
            if not ok:
                what = "learner table" if field.name == LEARNER else "catalogue"
                raise RowError(
                    f"{name}.{field.name}: ids are {t} but the {what}'s ids are {want}s; "
                    "give both in the same kind"
                )
        elif field.name == RANK and not pa.types.is_integer(t):
            raise RowError(f"{name}.{RANK}: ranks must be integers, got {t}")
        elif field.name == SCORE and not pa.types.is_floating(t):
            raise RowError(f"{name}.{SCORE}: scores must be floating point, got {t}")
        elif field.name in (SOURCE, MODEL_VERSION) and not _is_string(t):
            raise RowError(f"{name}.{field.name}: must be strings, got {t}")
        if field.name == SCORE and col.null_count:
            # pandas NaN arrives as null; the scores gate counts both as not finite.
            col = pc.fill_null(col.cast(pa.float64()), np.nan)
        if pa.types.is_integer(t) and t != field.type:
            _check_integer_range(col, field, name)
        try:
            col = col.cast(field.type)  # safe cast: an out-of-range value raises
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise RowError(
                f"{name}.{field.name}: cannot be written as {field.type}: {err}"
            ) from err
        if pa.types.is_string(field.type):
            _check_no_nul(col, f"{name}.{field.name}")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema).combine_chunks()


def iter_tables(
    source: Any, schema: pa.Schema, *, chunk_learners: int = 50_000
) -> Iterator[pa.Table]:
    """Arrow tables of `schema` from a stream of chunks, or from one whole table (a DataFrame
    or Arrow table), which is cut into chunks of `chunk_learners` whole learners."""
    if isinstance(source, pa.Table | pa.RecordBatch | pd.DataFrame):
        yield from _slice_learners(as_table(source, schema, name="rows"), chunk_learners)
        return
    if not isinstance(source, Iterable):
        raise RowError(
            f"rows: expected an iterable of chunks, a DataFrame or an Arrow table, got "
            f"{type(source).__name__}"
        )
    for i, chunk in enumerate(source):
        table = as_table(chunk, schema, name=f"chunk {i}")
        if table.num_rows:
            yield table


def _slice_learners(table: pa.Table, chunk_learners: int) -> Iterator[pa.Table]:
    if chunk_learners < 1:
        raise ValueError(f"chunk_learners: must be >= 1, got {chunk_learners}")
    ids = table.column(LEARNER)
    n = table.num_rows
    if n == 0:
        return
    change = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.r_[0, np.flatnonzero(change) + 1, n]
    for lo in range(0, len(starts) - 1, chunk_learners):
        hi = min(lo + chunk_learners, len(starts) - 1)
        yield table.slice(starts[lo], starts[hi] - starts[lo])
