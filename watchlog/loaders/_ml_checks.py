"""Checks of MovieLens source files, named by file and line (1-based as an editor counts
them: a header-less .dat / u.* file's data row i is line i + 1, a CSV file's i + 2).

Ratings are checked before they become events (a missing rating would otherwise be a
missing watch time, or a watch under watch="constant"); validation problems of the tables
built from the files are renamed to the files and their lines.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from watchlog.eventlog import EventLog
from watchlog.report import DataReport
from watchlog.schema import Problem, SchemaError

__all__ = ["SourceFile", "check_ratings", "occupation_names", "parse_release_dates", "validate"]

_N_EXAMPLES = 5


class SourceFile:
    """A file a table was read from, and the line of its data row 0."""

    def __init__(self, path: Path, first_line: int):
        self.path, self.first_line = Path(path), first_line

    def problem(self, column: str, rule: str, values: pd.Series, bad: np.ndarray) -> Problem:
        rows = np.flatnonzero(bad)
        examples = [(int(r) + self.first_line, _plain(values.iloc[r])) for r in rows[:_N_EXAMPLES]]
        name = self.path.name
        return Problem(name, column, rule, len(rows), examples, unit="line", source=name)


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def check_ratings(rating: pd.Series, source: SourceFile, scale: tuple[float, float]) -> None:
    """Every rating present, finite and on the data set's scale, else a `SchemaError` naming
    the file, the lines, the count and examples (vectorized)."""
    values = rating.to_numpy(dtype=np.float64, na_value=np.nan)
    lo, hi = scale
    missing = rating.isna().to_numpy()
    nan_text = np.isnan(values) & ~missing  # "nan" in the file
    inf = np.isinf(values)
    outside = np.isfinite(values) & ((values < lo) | (values > hi))
    checks = [
        ("rating must not be missing", missing),
        ("rating must be a finite number", nan_text | inf),
        (f"rating must be on the data set's scale {lo:g}..{hi:g}", outside),
    ]
    problems = [source.problem("rating", rule, rating, bad) for rule, bad in checks if bad.any()]
    if problems:
        raise SchemaError(problems)


def parse_release_dates(raw: pd.Series, source: SourceFile) -> pd.Series:
    """'01-Jan-1995' -> UTC timestamps; empty stays NaT, anything else unparseable raises."""
    parsed = pd.to_datetime(raw, format="%d-%b-%Y", utc=True, errors="coerce")
    bad = raw.notna().to_numpy() & parsed.isna().to_numpy()
    if bad.any():
        raise SchemaError([source.problem("release_date", "must look like 01-Jan-1995", raw, bad)])
    return parsed.astype("datetime64[ns, UTC]")


def occupation_names(
    codes: pd.Series, source: SourceFile, names: tuple[str, ...]
) -> pd.Categorical:
    """users.dat occupation codes 0..20 -> README names; an unknown code is an error."""
    bad = (codes.isna() | (codes < 0) | (codes >= len(names))).to_numpy()
    if bad.any():
        rule = f"occupation code must be 0..{len(names) - 1}"
        raise SchemaError([source.problem("occupation", rule, codes, bad)])
    return pd.Categorical.from_codes(codes.to_numpy(), names)


def validate(
    events: pd.DataFrame,
    learners: pd.DataFrame | None,
    courses: pd.DataFrame,
    files: dict[str, SourceFile],
    *,
    duplicates: str,
    report: DataReport,
) -> EventLog:
    """`EventLog.from_tables` (epochs in seconds), its problems named by file and line: the
    frames are in their files' row order, so frame row r is the file's line r + first_line
    (a table derived from the events, e.g. learners without users.dat, keeps its rows)."""
    try:
        return EventLog.from_tables(
            events, learners, courses, ts_unit="s", duplicates=duplicates, report=report
        )
    except SchemaError as err:
        named = []
        for p in err.problems:
            f = files.get(p.table)
            if f is not None and p.unit == "row":
                examples = [(r + f.first_line, v) for r, v in p.examples]
                p = replace(p, examples=examples, unit="line", source=f.path.name)
            named.append(p)
        raise SchemaError(named) from err
