"""Id columns of tables read from files: text ids that are plain integers become integers,
float ids that are whole numbers too, integer and text ids of one column are reconciled
across tables, small integers narrowed."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from watchlog.report import DataReport
from watchlog.schema import Problem, SchemaError

__all__ = ["ID_COLUMNS", "narrow_ids", "reconcile_id_kinds", "text_ids", "whole_float_ids"]

ID_COLUMNS = ("learner_id", "course_id")
_INT32 = np.iinfo(np.int32)

_PLAIN_INTEGER = r"0|-?[1-9][0-9]{0,17}"  # what int64 reads and writes back unchanged ("-0": no)
_NUMBER_LIKE = r"[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?"


def text_ids(frame: pd.DataFrame, table: str, report: DataReport | None) -> pd.DataFrame:
    """Id columns read as text become integers only when every value is a plain integer
    that reads back as the same text; otherwise they stay text, so "007", "7" and "7.0" stay
    three ids and 123456789012345678901 is not rounded (a type-guessing reader would merge
    the first three and turn the last into a float). Missing ids stay missing (validation
    names them)."""
    for col in ID_COLUMNS:
        if col not in frame.columns or not pd.api.types.is_string_dtype(frame[col].dtype):
            continue
        values = frame[col].astype("str") if frame[col].dtype == object else frame[col]
        present = values.dropna()
        plain = present.str.fullmatch(_PLAIN_INTEGER)
        if len(present) and bool(plain.all()):
            as_int = pd.to_numeric(values)
            frame[col] = as_int.astype("int64" if len(present) == len(values) else "Int64")
            continue
        numeric = present[present.str.fullmatch(_NUMBER_LIKE) & ~plain]
        if report is not None and len(numeric):
            report.note(
                f"{table}.{col}: read as text, not numbers: {len(numeric):,} value(s) are "
                f"numbers that are not plain integers (e.g. {numeric.unique()[:3].tolist()}), "
                "so each id is kept exactly as written"
            )
    return frame


def reconcile_id_kinds(
    frames: Mapping[str, pd.DataFrame | None], report: DataReport | None = None
) -> None:
    """In place: where one table holds an id column as integers and another as text (e.g.
    a learners table with a "guest" id), the integers become their text, so the same id
    matches in both (1 never equals "1"); noted in the report."""
    pairs = {"learner_id": ("events", "learners"), "course_id": ("events", "courses")}
    for col, names in pairs.items():
        have = {n: frames[n] for n in names if frames.get(n) is not None and col in frames[n]}
        kinds = {n: f[col].dtype.kind in "iu" or str(f[col].dtype) == "Int64"
                 for n, f in have.items()}  # fmt: skip
        if len(set(kinds.values())) < 2:
            continue
        for n, is_int in kinds.items():
            if is_int:
                f = have[n]
                f[col] = f[col].astype("str").where(f[col].notna(), None)
                if report is not None:
                    text = [m for m, k in kinds.items() if not k]
                    report.note(
                        f"{n}.{col}: integers read as text, to match the text ids of the "
                        f"{', '.join(text)} table"
                    )


def narrow_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """Integer ids that fit go to int32 (half the memory; IdMaps compare by value)."""
    for col in ID_COLUMNS:
        # numpy integers only: a nullable Int64 column has missing ids for validation to name
        dtype = frame[col].dtype if col in frame.columns else None
        if not isinstance(dtype, np.dtype) or dtype.kind not in "iu":
            continue
        ids = frame[col]
        if len(ids) and ids.min() >= _INT32.min and ids.max() <= _INT32.max:
            frame[col] = ids.astype(np.int32)
    return frame


def whole_float_ids(
    frame: pd.DataFrame, table: str, source: str, report: DataReport | None
) -> pd.DataFrame:
    """Float id columns (a Parquet writer's 7.0 for learner 7) become integers when every
    value is a whole number, so they match integer ids of another table (7.0 as text would
    be "7.0", never "7"); missing ids stay missing for validation to name. A value that is
    not whole (7.5, inf) is a `SchemaError` naming the rows: it is no integer id."""
    for col in ID_COLUMNS:
        if col not in frame.columns or frame[col].dtype.kind != "f":
            continue
        values = frame[col].to_numpy(dtype=np.float64)
        present = ~np.isnan(values)
        whole = present & np.isfinite(values) & (values == np.round(values))
        whole &= np.abs(values) < 2.0**63
        bad = present & ~whole
        if bad.any():
            rows = np.flatnonzero(bad)
            examples = [(int(r), float(values[r])) for r in rows[:5]]
            raise SchemaError(
                [
                    Problem(
                        table,
                        col,
                        "float ids must be whole numbers (read as integers)",
                        len(rows),
                        examples,
                        source=source,
                        fix="write the ids as integers or text",
                    )
                ]
            )
        ints = np.where(present, values, 0).astype(np.int64)
        frame[col] = ints if present.all() else pd.arrays.IntegerArray(ints, mask=~present)
        if report is not None:
            report.note(f"{table}.{col}: float ids, all whole numbers, read as integers")
    return frame
