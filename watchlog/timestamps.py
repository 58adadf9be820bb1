"""Timestamps of the data contract: parsing text and epochs to datetime64[ns, UTC].

Text is read in one explicit format per column (ISO 8601, or one inferred from the first
value), never by a guess per value; numbers are epochs in a given unit.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

__all__ = ["ns_to_utc", "to_utc", "note_epoch_span", "unit_hint"]


def ns_to_utc(ns: np.ndarray) -> pd.Series:
    """int64 UTC nanoseconds -> datetime64[ns, UTC] Series, without a pass through Python objects."""
    return pd.Series(np.asarray(ns, dtype=np.int64).view("datetime64[ns]")).dt.tz_localize("UTC")


def to_utc(values: pd.Series, *, unit: str | None = None) -> tuple[pd.Series, np.ndarray]:
    """Parse timestamps to datetime64[ns, UTC]; return (parsed, mask of unparseable rows).

    Naive datetimes are taken as UTC. Numbers are epochs and need `unit`
    ('s', 'ms', 'us', 'ns'); without one every numeric row is reported.
    """
    present = values.notna().to_numpy()
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        parsed = values.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
        values.dtype
    ):
        if unit is None:
            return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]"), present
        numeric = pd.to_numeric(values, errors="coerce")
        parsed = pd.to_datetime(numeric, unit=unit, utc=True, errors="coerce")
    else:
        first = np.flatnonzero(present)[:1]
        if unit is not None and len(first) and _is_number(values.iloc[first[0]]):
            # Epochs as text (a CSV column that one bad value kept from being numbers): each
            # number is an epoch in `unit`, anything else unparseable, not the whole column.
            numeric = pd.to_numeric(values.astype(object), errors="coerce")
            parsed = pd.to_datetime(numeric, unit=unit, utc=True, errors="coerce")
        else:
            # One format for the whole column, chosen by its first value: ISO 8601, or the
            # one format inferred from it. A value in another format is NaT (reported
            # unparseable, with its line), never read by a guess of its own: a per-value
            # guess reads 2024-01-08 and 02/03/2024 both, and 1/8/24 and 13/1/24 in
            # opposite orders.
            parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
            if len(first) and pd.isna(parsed.iloc[first[0]]):
                parsed = _one_format(values, values.iloc[first[0]])
    parsed = _in_ns_range(parsed).astype("datetime64[ns, UTC]")
    return parsed, present & parsed.isna().to_numpy()


_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")
_UNITS = ("s", "ms", "us", "ns")


def _is_number(value: Any) -> bool:
    if isinstance(value, str):
        return _NUMBER.fullmatch(value) is not None
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def unit_hint(raw: pd.Series, bad: np.ndarray, unit: str | None) -> str | None:
    """For epochs that did not parse in `unit`: the other units that read the first such value
    as a date in 1990-2100 (1704708000000 with unit s is milliseconds), as a fix; None when
    the value is no number or no unit fits."""
    rows = np.flatnonzero(bad)
    if unit is None or not len(rows) or not _is_number(value := raw.iloc[rows[0]]):
        return None
    number = float(value)
    value = value.item() if isinstance(value, np.generic) else value
    fits = []
    for other in _UNITS:
        if other != unit:
            with contextlib.suppress(OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
                ts = pd.to_datetime(number, unit=other, utc=True)
                if 1990 <= ts.year <= 2100:
                    fits.append(f"ts_unit={other} reads {value!r} as {ts}")
    if not fits:
        return None
    return f"the epochs are not in ts_unit={unit}: " + "; ".join(fits) + " (data.source.ts_unit)"


_TS_MIN, _TS_MAX = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")


def _in_ns_range(parsed: pd.Series) -> pd.Series:
    """NaT (reported as unparseable) for timestamps outside datetime64[ns] (1677-09-22 to
    2262-04-11), which pandas may parse at a coarser unit but cannot hold in ns."""
    unit_ok = parsed.dt.unit == "ns"
    if unit_ok:
        return parsed
    out = (parsed >= _TS_MIN) & (parsed <= _TS_MAX)
    return parsed.where(out.fillna(False))


def note_epoch_span(ts: pd.Series, raw: pd.Series, unit: str | None, report) -> None:
    """Epochs read in the wrong unit land in 1970 (seconds read as ms) or far in the future:
    a numeric column read with `unit` whose dates fall outside 1990-2100 is noted, with the
    span and the other units' reading of its first value."""
    if unit is None or report is None or not pd.api.types.is_numeric_dtype(raw.dtype):
        return
    lo, hi = ts.min(), ts.max()
    if pd.isna(lo) or (lo.year >= 1990 and hi.year <= 2100):
        return
    first = raw.dropna().iloc[0]
    others = []
    for u in ("s", "ms", "us", "ns"):
        if u != unit:
            with contextlib.suppress(OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
                others.append(f"{u}: {pd.to_datetime(first, unit=u, utc=True)}")
    report.note(
        f"events.ts: read with ts_unit={unit}, the events span {lo} to {hi}, outside 1990-2100; "
        f"if the unit is wrong, data.source.ts_unit reads the first value {first} as "
        + "; ".join(others)
    )
    logging.getLogger(__name__).warning("%s", report.notes[-1])


def _one_format(values: pd.Series, first: Any) -> pd.Series:
    """Non-ISO timestamps in one explicit format, inferred from the column's `first` value
    by pandas' guess, month first (US) unless only day first reads every value; when
    neither reads them all, the one that reads more (month first on a tie), the rest NaT.
    Never `format="mixed"` or dateutil, which guess per element and would read 1/8/24 as
    January and 13/1/24 as January 13 in the same column, scrambling the time order."""
    sample = str(first).strip()
    formats = []
    for dayfirst in (False, True):
        guess = _guess_format(sample, dayfirst)
        if guess is not None and guess not in formats:
            formats.append(guess)
    best = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    n_present, n_best = int(values.notna().sum()), 0
    for fmt in formats:
        parsed = pd.to_datetime(values, utc=True, errors="coerce", format=fmt)
        n = int(parsed.notna().sum())
        if n == n_present:
            return parsed
        if n > n_best:
            best, n_best = parsed, n
    return best


_PAD_DIGIT = re.compile(r"(?<!\d)(\d)(?!\d)")
_SHORT_YEAR = re.compile(r"^(\d\d([/.-])\d\d\2)(\d\d)(?!\d)")


def _guess_format(sample: str, dayfirst: bool) -> str | None:
    """pandas' format guess for one value, or None. Unpadded numbers (1/8/24) and two-digit
    years defeat the guess, so they are guessed padded (01/08/2024) and the year directive
    put back to %y: an explicit %m / %d / %H still reads one or two digits."""
    with warnings.catch_warnings():  # "parsing in %d/%m/%Y when dayfirst=False": both tried
        warnings.simplefilter("ignore", UserWarning)
        guess = guess_datetime_format(sample, dayfirst=dayfirst)
        if guess is None:
            padded = _PAD_DIGIT.sub(r"0\1", sample)
            guess = guess_datetime_format(padded, dayfirst=dayfirst)
            long_year = _SHORT_YEAR.sub(r"\g<1>20\3", padded)
            if guess is None and long_year != padded:
                guess = guess_datetime_format(long_year, dayfirst=dayfirst)
                guess = None if guess is None else guess.replace("%Y", "%y")
    return guess
