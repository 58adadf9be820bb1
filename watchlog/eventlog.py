"""`EventLog`: the three validated tables plus the id maps that travel with them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from watchlog.idmap import IdMap
from watchlog.io import atomic_directory
from watchlog.report import DataReport
from watchlog.schema import (
    DUPLICATE_KEY,
    Problem,
    SchemaError,
    duplicate_event_mask,
    normalize_courses,
    normalize_events,
    normalize_learners,
    unknown_id_problems,
)

TS_UNITS = ("s", "ms", "us", "ns")  # epochs: numeric timestamps

__all__ = ["EventLog", "DUPLICATE_HINT", "DUPLICATE_POLICIES", "ts_ns", "utc_ns", "utc_timestamp"]

DUPLICATE_POLICIES = ("error", "first", "last", "max_watch")
# One key decides: the data configs' source.duplicates interpolates cleaning.duplicates.
DUPLICATE_HINT = (
    "duplicate event (set data.cleaning.duplicates to first, last or max_watch; "
    "in Python, duplicates= of the loader and of CleaningConfig)"
)


@dataclass(frozen=True, eq=False)
class EventLog:
    """Validated events, learners and courses.

    `learners` row i is learner index i (likewise courses); `events` carries
    `learner_idx` / `course_idx` (int32) beside the caller's ids and is sorted by
    `ts` (stable), so time windows are contiguous slices.
    """

    events: pd.DataFrame
    learners: pd.DataFrame
    courses: pd.DataFrame
    learner_ids: IdMap
    course_ids: IdMap

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_tables(
        cls,
        events: pd.DataFrame,
        learners: pd.DataFrame | None = None,
        courses: pd.DataFrame | None = None,
        *,
        ts_unit: str | None = None,
        duplicates: str = "error",
        strict_clicked: bool = False,
        report: DataReport | None = None,
    ) -> EventLog:
        """Validate and normalize; raise `SchemaError` listing every problem.

        `clicked` on a non-impression event is set to missing (counted in `report`);
        `strict_clicked` makes it an error instead.

        `duplicates`: with "error" (default) repeated events are a validation
        problem; any other policy leaves them for `cleaning.drop_duplicate_events`.
        Missing learners / courses tables are derived from the event ids (noted in
        `report`).
        """
        if duplicates not in DUPLICATE_POLICIES:
            raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
        if ts_unit is not None and ts_unit not in TS_UNITS:
            raise ValueError(
                f"ts_unit (data.source.ts_unit): must be one of {TS_UNITS} or null, got {ts_unit!r}"
            )
        report = report if report is not None else DataReport()
        ev, problems = normalize_events(
            events, ts_unit=ts_unit, strict_clicked=strict_clicked, report=report
        )
        if learners is None and "learner_id" in ev:
            learners = pd.DataFrame({"learner_id": pd.unique(ev["learner_id"].dropna())})
            report.note(
                f"no learners table: {len(learners):,} learners derived from events, segment 'unknown'"
            )
        if courses is None and "course_id" in ev:
            courses = pd.DataFrame({"course_id": pd.unique(ev["course_id"].dropna())})
            report.note(f"no courses table: {len(courses):,} courses derived from events")
        # without an id column in the events the tables cannot be derived: the events'
        # problems name the missing column, and the entity tables are not checked
        lt, lp = (
            normalize_learners(learners, report) if learners is not None else (pd.DataFrame(), [])
        )
        ct, cp = (
            normalize_courses(courses, ts_unit) if courses is not None else (pd.DataFrame(), [])
        )
        problems += lp + cp
        # Every rule is checked whatever else failed, so one run lists all problems.
        if "learner_id" in ev and "learner_id" in lt:
            problems += unknown_id_problems(
                ev, "learner_id", pd.Index(lt["learner_id"].dropna()), "learners"
            )
        if "course_id" in ev and "course_id" in ct:
            problems += unknown_id_problems(
                ev, "course_id", pd.Index(ct["course_id"].dropna()), "courses"
            )
        if duplicates == "error" and all(c in ev for c in DUPLICATE_KEY):
            dup = duplicate_event_mask(ev)
            if dup.any():
                key = ev.loc[dup, list(DUPLICATE_KEY)].head(5)
                examples = [
                    (r, tuple(v))
                    for r, v in zip(key.index, key.itertuples(index=False), strict=True)
                ]
                problems.append(
                    Problem(
                        "events",
                        "+".join(DUPLICATE_KEY),
                        DUPLICATE_HINT,
                        int(dup.sum()),
                        examples,
                        unit="line" if ev.index.name == "line" else "row",
                    )
                )
        if problems:
            raise SchemaError(problems)
        return cls._assemble(ev, lt, ct, report)

    @classmethod
    def _assemble(
        cls, ev: pd.DataFrame, lt: pd.DataFrame, ct: pd.DataFrame, report: DataReport
    ) -> EventLog:
        learner_ids = IdMap(lt["learner_id"], "learner_id")
        course_ids = IdMap(ct["course_id"], "course_id")
        lt = lt.iloc[learner_ids.to_index(lt["learner_id"]).argsort(kind="stable")].reset_index(
            drop=True
        )
        ct = ct.iloc[course_ids.to_index(ct["course_id"]).argsort(kind="stable")].reset_index(
            drop=True
        )
        ev = ev.assign(
            learner_idx=learner_ids.to_index(ev["learner_id"]),
            course_idx=course_ids.to_index(ev["course_id"]),
        )
        ts = ts_ns(ev["ts"])
        if len(ts) > 1 and (ts[1:] < ts[:-1]).any():  # reorder (a full copy) only when needed
            ev = ev.iloc[np.argsort(ts, kind="stable")]
        ev = ev.reset_index(drop=True)
        report.add_table(
            "events",
            len(ev),
            impressions=int(ev["impression"].sum()),
            with_watch_time=int((ev["watch_seconds"] > 0).sum()),
        )
        report.add_table("learners", len(lt), segments=int(lt["segment"].nunique()))
        report.add_table("courses", len(ct))
        return cls(ev, lt, ct, learner_ids, course_ids)

    def with_events(self, events: pd.DataFrame) -> EventLog:
        """The same learners, courses and id maps over another set of events (a filter or window)."""
        return replace(self, events=events)

    # ---- views --------------------------------------------------------------------
    @property
    def n_learners(self) -> int:
        return len(self.learner_ids)

    @property
    def n_courses(self) -> int:
        return len(self.course_ids)

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        span = ""
        if len(self.events):
            span = (
                f", {self.events['ts'].iloc[0]:%Y-%m-%d} .. {self.events['ts'].iloc[-1]:%Y-%m-%d}"
            )
        return f"EventLog({len(self.events):,} events, {self.n_learners:,} learners, {self.n_courses:,} courses{span})"

    def time_window(self, start=None, end=None) -> pd.DataFrame:
        """Events with start <= ts < end (either bound optional); a contiguous slice."""
        ts = ts_ns(self.events["ts"])
        lo = 0 if start is None else int(np.searchsorted(ts, utc_ns(start), side="left"))
        hi = len(ts) if end is None else int(np.searchsorted(ts, utc_ns(end), side="left"))
        return self.events.iloc[lo:hi]

    def select(self, on: str = "all") -> pd.DataFrame:
        """Events of one kind: "all", "watched" (needs cleaning.mark_watched) or "impressions"."""
        if on == "all":
            return self.events
        if on == "impressions":
            return self.events[self.events["impression"].to_numpy()]
        if on == "watched":
            if "watched" not in self.events.columns:
                raise ValueError(
                    "select('watched'): no `watched` column yet; run cleaning.mark_watched (or clean) first"
                )
            return self.events[self.events["watched"].to_numpy()]
        raise ValueError(f"select: `on` must be 'all', 'watched' or 'impressions', got {on!r}")

    def interactions(
        self, events: pd.DataFrame | None = None, weights: np.ndarray | None = None
    ) -> sp.csr_matrix:
        """Learner x course CSR float32; repeated pairs are summed (weights default 1 -> counts)."""
        ev = self.events if events is None else events
        w = (
            np.ones(len(ev), dtype=np.float32)
            if weights is None
            else np.asarray(weights, dtype=np.float32)
        )
        if w.shape != (len(ev),):
            raise ValueError(f"weights: expected shape ({len(ev)},), got {w.shape}")
        m = sp.csr_matrix(
            (w, (ev["learner_idx"].to_numpy(), ev["course_idx"].to_numpy())),
            shape=(self.n_learners, self.n_courses),
            dtype=np.float32,
        )
        m.sum_duplicates()
        return m

    # ---- provenance and storage ---------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 over the content of the three tables (row order included)."""
        h = hashlib.sha256()
        for frame in (self.events, self.learners, self.courses):
            h.update(str(list(frame.columns)).encode())
            h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return h.hexdigest()

    def save(self, directory: str | os.PathLike) -> Path:
        """Write events/learners/courses Parquet into `directory`, replacing it atomically."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self.events.drop(columns=["learner_idx", "course_idx"]).to_parquet(
                tmp / "events.parquet", index=False
            )
            self.learners.to_parquet(tmp / "learners.parquet", index=False)
            self.courses.to_parquet(tmp / "courses.parquet", index=False)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, report: DataReport | None = None) -> EventLog:
        directory = Path(directory)
        return cls.from_tables(
            pd.read_parquet(directory / "events.parquet"),
            pd.read_parquet(directory / "learners.parquet"),
            pd.read_parquet(directory / "courses.parquet"),
            duplicates="error",  # a saved log was cleaned: a duplicate now means it was altered
            report=report,
        )


def ts_ns(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds (a zero-copy view when the column is already in ns,
    as the contract makes it; other units, e.g. pandas 3's default "us", are converted)."""
    if getattr(ts.dtype, "unit", "ns") != "ns":
        ts = ts.dt.as_unit("ns")
    return ts.array.asi8


def utc_timestamp(t) -> pd.Timestamp:
    """`t` as a UTC Timestamp: a naive time is read as UTC (the events' own zone)."""
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def utc_ns(t) -> np.int64:
    return np.int64(utc_timestamp(t).as_unit("ns").value)
