"""The event-log data contract (docs/design.md) and its validation.

Each `normalize_*` function coerces a caller's table to the canonical dtypes and
returns every broken rule it found as a `Problem` (table, column, rule, count of
offending rows, a few examples). Nothing is dropped here: a caller either gets
the whole table back or a `SchemaError` listing every problem at once.

Canonical dtypes
    events   learner_id, course_id: caller's ids (any hashable, no missing)
             ts: datetime64[ns, UTC]; watch_seconds: float32 >= 0 or NaN
             clicked: Int8 in {0, 1} or <NA>, only on impressions (set to <NA> elsewhere)
             impression: bool; position: Int16 >= 1 or <NA>; channel: category
    learners learner_id (unique), segment: category (+ any profile columns)
    courses  course_id (unique); when present: duration_seconds float32 >= 0 or NaN,
             published_at datetime64[ns, UTC]; language/category/difficulty category
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from watchlog.report import DataReport
from watchlog.timestamps import note_epoch_span, ns_to_utc, to_utc, unit_hint

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_OPTIONAL_COLUMNS",
    "LEARNER_COLUMNS",
    "COURSE_COLUMNS",
    "CONTRACT_COLUMNS",
    "TEXT_COLUMNS",
    "DUPLICATE_KEY",
    "Problem",
    "SchemaError",
    "normalize_events",
    "normalize_learners",
    "normalize_courses",
    "duplicate_event_mask",
    "unknown_id_problems",
    "to_utc",
    "ns_to_utc",
]

EVENT_COLUMNS = ("learner_id", "course_id", "ts", "watch_seconds", "clicked", "impression")
EVENT_OPTIONAL_COLUMNS = ("position", "channel")
RESERVED_EVENT_COLUMNS = ("learner_idx", "course_idx")  # EventLog sets them (`watched`: cleaning)
LEARNER_COLUMNS = ("learner_id", "segment")  # + any profile columns
# The course columns the contract knows; only course_id is required, the rest are checked when present.
COURSE_COLUMNS = (
    "course_id",
    "language",
    "category",
    "difficulty",
    "duration_seconds",
    "skills",
    "title",
    "published_at",
)
# Contract columns that hold text (ids included): loaders read them from CSV exactly as
# written (`007` stays `007`, `NA` is text: only an empty field is missing), as Parquet does.
TEXT_COLUMNS = (
    "learner_id",
    "course_id",
    "channel",
    "segment",
    "language",
    "category",
    "difficulty",
    "skills",
    "title",
)
# Every column the contract names, per table (loaders map sources onto these).
CONTRACT_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": EVENT_COLUMNS + EVENT_OPTIONAL_COLUMNS,
    "learners": LEARNER_COLUMNS,
    "courses": COURSE_COLUMNS,
}
# Two rows with the same learner, course, timestamp and impression flag are the same event.
DUPLICATE_KEY = ("learner_id", "course_id", "ts", "impression")
_N_EXAMPLES = 5


@dataclass(frozen=True)
class Problem:
    """One broken rule: where, what, how many rows, and a few (row, value) examples.

    `unit` says what the example numbers count: "row" (0-based data rows of a frame) or
    "line" (lines of the source file as an editor counts them: 1-based, header = line 1);
    `source` is the file the table was read from, when it was."""

    table: str
    column: str
    rule: str
    count: int
    examples: list[Any] = field(default_factory=list)
    unit: str = "row"
    source: str | None = None
    fix: str | None = None  # what to do about it, when there is one thing to say

    def __str__(self) -> str:
        ex = ", ".join(f"{self.unit} {r}: {v!r}" for r, v in self.examples)
        where = f" (file {self.source})" if self.source and self.source != self.table else ""
        return (
            f"{self.table}.{self.column}{where}: {self.rule} -- {self.count:,} row(s)"
            + (f", e.g. {ex}" if ex else "")
            + (f". Fix: {self.fix}" if self.fix else "")
        )


class SchemaError(ValueError):
    """Every problem found in the input, raised together."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} data problem(s):\n{lines}")

    def rules(self) -> set[tuple[str, str]]:
        """(column, rule) pairs, for tests and programmatic handling."""
        return {(p.column, p.rule) for p in self.problems}


def _problem(table: str, column: str, rule: str, values: pd.Series, mask) -> Problem | None:
    mask = np.asarray(mask, dtype=bool)
    count = int(mask.sum())
    if count == 0:
        return None
    rows = values.index[mask][:_N_EXAMPLES]
    vals = values[mask].iloc[:_N_EXAMPLES]
    examples = [(_plain(r), _plain(v)) for r, v in zip(rows, vals, strict=True)]
    # A loader that read a file indexes the frame by file line (index name "line").
    unit = "line" if values.index.name == "line" else "row"
    return Problem(table, column, rule, count, examples, unit=unit)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def _collect(problems: list[Problem], p: Problem | None) -> None:
    if p is not None:
        problems.append(p)


_MISSING_FIX = {  # what to do about a contract column a table lacks (loaders' keys)
    "learner_id": "map it (data.source.events.columns.learner_id=<column>)",
    "course_id": "map it (data.source.events.columns.course_id=<column>)",
    "ts": "map it (data.source.events.columns.ts=<column>) or fill it for a log without "
    "times (data.source.events.fill.ts=2024-01-01, then split=stratified)",
    "watch_seconds": "map it (data.source.events.columns.watch_seconds=<column>) or fill it "
    "(data.source.events.fill.watch_seconds=600 for a log of whole views; nan: unknown)",
    "clicked": "map it (data.source.events.columns.clicked=<column>) or fill it "
    "(data.source.events.fill.clicked=nan); a log of organic events needs neither clicked "
    "nor impression",
    "impression": "map it (data.source.events.columns.impression=<column>) or fill it "
    "(data.source.events.fill.impression=false for organic events)",
}


def _missing_columns(frame: pd.DataFrame, table: str, required) -> list[Problem]:
    return [
        Problem(
            table,
            col,
            "required column is missing",
            len(frame),
            [],
            fix=_MISSING_FIX.get(col) if table == "events" else None,
        )  # fmt: skip
        for col in required
        if col not in frame.columns
    ]


_POSITION_MAX = int(np.iinfo(np.int16).max)  # slate positions are held as Int16


def _missing_ids(table: str, col: str, ids: pd.Series) -> Problem | None:
    """Missing ids; from a file (indexed by line) the examples show what the file says there,
    an empty field (the only thing a loader reads as a missing id)."""
    missing = ids.isna().to_numpy()
    if not missing.any():
        return None
    shown = pd.Series("", index=ids.index, dtype=object) if ids.index.name == "line" else ids
    return _problem(table, col, "id must not be missing", shown, missing)


def _mixed_ids(table: str, col: str, ids: pd.Series) -> Problem | None:
    """Ids of one type: in a column of Python objects mixing text and numbers, 3 and "3"
    would be two ids and 3 and 3.0 one, and the log could not be saved to Parquet. The rows
    of the rarer kind are named."""
    if not pd.api.types.is_object_dtype(ids.dtype):
        return None
    if pd.api.types.infer_dtype(ids, skipna=True) not in ("mixed", "mixed-integer"):
        return None
    is_text = ids.map(lambda v: isinstance(v, str)).to_numpy()  # object column: per value
    present = ids.notna().to_numpy()
    rare = is_text if is_text[present].sum() * 2 < present.sum() else ~is_text & present
    return _problem(table, col, "ids must be all text or all numbers, not both", ids, rare)


def _to_bool(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Booleans from bool, 0/1 or true/false/yes/no strings; mask of rows that are none of them."""
    if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
        return values.astype(bool), np.zeros(len(values), dtype=bool)
    text = values.astype("string").str.strip().str.lower()
    table = {
        "true": True,
        "1": True,
        "yes": True,
        "false": False,
        "0": False,
        "no": False,
        "1.0": True,
        "0.0": False,
    }
    mapped = text.map(table)
    bad = mapped.isna().to_numpy()
    return mapped.fillna(False).astype(bool), bad


def normalize_events(
    frame: pd.DataFrame,
    *,
    ts_unit: str | None = None,
    strict_clicked: bool = False,
    report: DataReport | None = None,
) -> tuple[pd.DataFrame, list[Problem]]:
    """Canonical events table and the problems found (duplicates and ids checked elsewhere).

    `clicked` on a non-impression (organic) event is set to missing and counted in
    `report`; with `strict_clicked` it is a problem instead."""
    t = "events"
    problems = _missing_columns(frame, t, EVENT_COLUMNS)
    problems += [
        Problem(
            t,
            col,
            "column name is reserved (the toolkit computes it)",
            len(frame),
            [],
            fix="rename the column, or drop it",
        )  # fmt: skip
        for col in RESERVED_EVENT_COLUMNS
        if col in frame.columns
    ]
    missing = {p.column for p in problems}
    out = pd.DataFrame(index=frame.index)

    for col in ("learner_id", "course_id"):
        if col in missing:
            continue
        _collect(problems, _missing_ids(t, col, frame[col]))
        _collect(problems, _mixed_ids(t, col, frame[col]))
        out[col] = frame[col]

    if "ts" not in missing:
        ts, bad = to_utc(frame["ts"], unit=ts_unit)
        rule = (
            "timestamp is numeric: give ts_unit (s, ms, us, ns) to read epochs"
            if bad.any() and pd.api.types.is_numeric_dtype(frame["ts"].dtype) and ts_unit is None
            else "timestamp must be parseable (years 1678-2261)"
        )
        unparseable = _problem(t, "ts", rule, frame["ts"], bad)
        if unparseable is not None:  # epochs in another unit: say which one fits
            unparseable = replace(unparseable, fix=unit_hint(frame["ts"], bad, ts_unit))
        _collect(problems, unparseable)
        _collect(
            problems,
            _problem(t, "ts", "timestamp must not be missing", frame["ts"], frame["ts"].isna()),
        )
        out["ts"] = ts
        note_epoch_span(ts, frame["ts"], ts_unit, report)

    if "watch_seconds" not in missing:
        raw = frame["watch_seconds"]
        num = pd.to_numeric(raw, errors="coerce")
        non_numeric = num.isna().to_numpy() & raw.notna().to_numpy()
        _collect(
            problems,
            _problem(t, "watch_seconds", "must be numeric (missing allowed)", raw, non_numeric),
        )
        _collect(
            problems,
            _problem(
                t, "watch_seconds", "must be >= 0 (missing allowed)", raw, (num < 0).to_numpy()
            ),
        )
        _collect(
            problems,
            _problem(
                t,
                "watch_seconds",
                "must be finite (and below 3.4e38, float32's largest)",
                raw,
                too_large := np.abs(num.to_numpy(dtype=float, na_value=np.nan))
                > np.finfo(np.float32).max,
            ),
        )
        out["watch_seconds"] = num.mask(too_large).astype(np.float32)  # those rows: reported

    if "impression" not in missing:
        imp, bad_impression = _to_bool(frame["impression"])
        _collect(
            problems,
            _problem(
                t,
                "impression",
                "must be boolean (true/false or 1/0), not missing",
                frame["impression"],
                bad_impression,
            ),
        )
        out["impression"] = imp

    if "clicked" not in missing:
        raw = frame["clicked"]
        num = pd.to_numeric(raw, errors="coerce")
        not_01 = raw.notna().to_numpy() & ~num.isin([0, 1]).to_numpy()
        _collect(problems, _problem(t, "clicked", "must be 0 or 1 (missing allowed)", raw, not_01))
        clicked = num.where(num.isin([0, 1])).astype("Int8")
        if "impression" in out:
            # Rows whose impression flag is itself invalid are reported once, by its rule.
            on_organic = (
                clicked.notna().to_numpy() & ~out["impression"].to_numpy() & ~bad_impression
            )
            if strict_clicked:
                _collect(
                    problems,
                    _problem(
                        t,
                        "clicked",
                        "clicked is only defined on impressions (impression=true); "
                        "strict_clicked=false sets it to missing on other events instead",
                        raw,
                        on_organic,
                    ),
                )
            elif on_organic.any():
                # A watch implies a click in many platforms' logs: the value carries no
                # information about a slate, so it becomes missing, counted in the report.
                ones = int((clicked[on_organic] == 1).sum())
                clicked = clicked.mask(pd.Series(on_organic, index=clicked.index))
                if report is not None:
                    n = len(frame)
                    report.add_step(
                        "clicked_on_organic_to_missing",
                        "events",
                        n,
                        n,
                        set_missing=int(on_organic.sum()),
                        were_1=ones,
                        were_0=int(on_organic.sum()) - ones,
                        why="clicked is defined on impressions only (strict_clicked=true: error)",
                    )
        out["clicked"] = clicked

    if "position" in frame.columns:
        raw = frame["position"]
        num = pd.to_numeric(raw, errors="coerce")
        ok = (num >= 1) & (num <= _POSITION_MAX) & (num == np.floor(num))
        bad = raw.notna().to_numpy() & ~ok.fillna(False).to_numpy()
        _collect(
            problems,
            _problem(
                t,
                "position",
                f"must be an integer in 1..{_POSITION_MAX:,} (missing allowed)",
                raw,
                bad,
            ),  # fmt: skip
        )
        out["position"] = num.where(~pd.Series(bad, index=num.index)).astype("Int16")
    if "channel" in frame.columns:
        out["channel"] = frame["channel"].astype("category")

    extra = [c for c in frame.columns if c not in out.columns and c not in EVENT_COLUMNS]
    for col in extra:  # caller's extra columns (e.g. rating) travel unchanged
        out[col] = frame[col]
    return out, problems


def _normalize_entity_table(
    frame: pd.DataFrame, table: str, id_col: str
) -> tuple[pd.DataFrame, list[Problem]]:
    problems = _missing_columns(frame, table, (id_col,))
    if problems:
        return frame, problems
    ids = frame[id_col]
    _collect(problems, _missing_ids(table, id_col, ids))
    _collect(problems, _mixed_ids(table, id_col, ids))
    dup = ids.duplicated(keep=False).to_numpy() & ids.notna().to_numpy()
    _collect(problems, _problem(table, id_col, "id must be unique", ids, dup))
    return frame.copy(), problems


def normalize_learners(
    frame: pd.DataFrame, report: DataReport | None = None
) -> tuple[pd.DataFrame, list[Problem]]:
    """Canonical learners table; `segment` 'unknown' where it is missing (counted in
    `report`) or when the column is absent."""
    out, problems = _normalize_entity_table(frame, "learners", "learner_id")
    if problems and problems[0].rule == "required column is missing":
        return out, problems
    if "segment" not in out.columns:
        out["segment"] = "unknown"
    segment = out["segment"].astype("string")
    blank = int(segment.isna().sum())
    if blank and report is not None:
        report.note(f"learners.segment: {blank:,} of {len(out):,} missing, set to 'unknown'")
    out["segment"] = segment.fillna("unknown").astype("category")
    return out, problems


def normalize_courses(
    frame: pd.DataFrame, ts_unit: str | None = None
) -> tuple[pd.DataFrame, list[Problem]]:
    """Canonical courses table; contract columns are checked when present. A numeric
    `published_at` is an epoch in `ts_unit` (the events' unit; seconds when None)."""
    t = "courses"
    out, problems = _normalize_entity_table(frame, t, "course_id")
    if problems and problems[0].rule == "required column is missing":
        return out, problems
    if "duration_seconds" in out.columns:
        raw = out["duration_seconds"]
        num = pd.to_numeric(raw, errors="coerce")
        _collect(
            problems,
            _problem(
                t,
                "duration_seconds",
                "must be numeric (missing allowed)",
                raw,
                num.isna().to_numpy() & raw.notna().to_numpy(),
            ),
        )
        _collect(
            problems,
            _problem(
                t, "duration_seconds", "must be >= 0 (missing allowed)", raw, (num < 0).to_numpy()
            ),
        )
        out["duration_seconds"] = num.astype(np.float32)
    if "published_at" in out.columns:
        parsed, bad = to_utc(out["published_at"], unit=ts_unit or "s")
        _collect(
            problems,
            _problem(
                t,
                "published_at",
                "timestamp must be parseable (years 1678-2261)",
                out["published_at"],
                bad,
            ),
        )
        out["published_at"] = parsed
    for col in ("language", "category", "difficulty"):
        if col in out.columns:
            out[col] = out[col].astype("category")
    return out, problems


def duplicate_event_mask(events: pd.DataFrame, keep: str | bool = False) -> np.ndarray:
    """Rows whose DUPLICATE_KEY repeats (keep=False marks every copy)."""
    key = list(DUPLICATE_KEY)
    ts = events["ts"]
    t = ts.array.asi8 if isinstance(ts.dtype, pd.DatetimeTZDtype) else ts.to_numpy()
    # Copies share their timestamp: hash the whole key only where the timestamp repeats
    # (on the synthetic platform that is almost never, on MovieLens a same-second minority).
    if t.dtype.kind in "iu" and len(t) > 1 and (t[1:] >= t[:-1]).all():
        same = t[1:] == t[:-1]  # time-sorted (every EventLog): repeats are neighbours, O(n)
        candidate = np.zeros(len(t), dtype=bool)
        candidate[1:] |= same
        candidate[:-1] |= same
    else:
        candidate = pd.Series(t).duplicated(keep=False).to_numpy()
    out = np.zeros(len(events), dtype=bool)
    if candidate.any():
        sub = events.loc[candidate, key]
        # Rows missing a key part (id or timestamp) are reported by their own rule instead.
        out[candidate] = sub.duplicated(keep=keep).to_numpy() & sub.notna().all(axis=1).to_numpy()
    return out


def unknown_id_problems(
    events: pd.DataFrame, column: str, known: pd.Index, table: str
) -> list[Problem]:
    """Event rows whose id is not in the learners / courses table."""
    unknown = ~events[column].isin(known).to_numpy() & events[column].notna().to_numpy()
    p = _problem("events", column, f"id must exist in the {table} table", events[column], unknown)
    return [p] if p else []
