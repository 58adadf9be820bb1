"""Cleaning steps. Each takes an EventLog, returns a new one, and reports counts.

Nothing is dropped silently: every step adds a line to the `DataReport` with rows
before and after (and what was removed, by reason). The watch-time threshold does
not drop rows at all: it adds a boolean `watched` column, because impressions
with short watches are still GLMix training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from watchlog.eventlog import (
    DUPLICATE_HINT,
    DUPLICATE_POLICIES,
    EventLog,
    ts_ns,
    utc_ns,
    utc_timestamp,
)
from watchlog.report import DataReport
from watchlog.schema import DUPLICATE_KEY, Problem, SchemaError, duplicate_event_mask

__all__ = [
    "CleaningConfig",
    "clean",
    "drop_duplicate_events",
    "mark_watched",
    "restrict_window",
    "filter_min_activity",
]


@dataclass(frozen=True)
class CleaningConfig:
    """What `clean` does, in order: duplicates, time window, watched flag, activity filters.

    min_watch_seconds / min_watch_fraction: an event counts as a watch when
      watch_seconds >= min_watch_seconds; with min_watch_fraction, instead when
      watch_seconds >= min_watch_fraction x its course's duration (not "either one":
      min_watch_seconds is then only the threshold of courses without a positive
      duration, and must be given when there are such courses).
    lookback_days: keep only events within this many days before `end` (the last
      event when `end` is None). None keeps everything.
    min_learner_watches / min_course_watches: activity filters on watched events,
      OFF (0) by default and reported when on; `iterate` repeats them to a fixed
      point (k-core).
    activity_before: the activity filters count only watched events strictly before this
      time (a removed learner's or course's later events still go). None counts every
      event, which lets events after a split's cutoff decide which earlier events stay:
      `experiments.data.prepare_data` refuses a temporal split whose earliest cutoff is
      before it (or None) while a filter is on.
    """

    duplicates: str = "error"
    min_watch_seconds: float | None = 60.0
    min_watch_fraction: float | None = None
    lookback_days: float | None = None
    end: str | None = None
    min_learner_watches: int = 0
    min_course_watches: int = 0
    iterate: bool = False
    activity_before: str | pd.Timestamp | None = None


def clean(
    log: EventLog, config: CleaningConfig | None = None, report: DataReport | None = None
) -> EventLog:
    cfg = config or CleaningConfig()
    report = report if report is not None else DataReport()
    log = drop_duplicate_events(log, cfg.duplicates, report)
    if cfg.lookback_days is not None:
        end = (
            pd.Timestamp(cfg.end, tz="UTC")
            if cfg.end
            else log.events["ts"].max() + pd.Timedelta(1, "ns")
        )
        log = restrict_window(log, end - pd.Timedelta(days=cfg.lookback_days), end, report)
    log = mark_watched(
        log, min_seconds=cfg.min_watch_seconds, min_fraction=cfg.min_watch_fraction, report=report
    )
    if cfg.min_learner_watches or cfg.min_course_watches:
        log = filter_min_activity(
            log,
            min_learner_watches=cfg.min_learner_watches,
            min_course_watches=cfg.min_course_watches,
            iterate=cfg.iterate,
            before=cfg.activity_before,
            report=report,
        )
    return log


def drop_duplicate_events(
    log: EventLog, policy: str = "error", report: DataReport | None = None
) -> EventLog:
    """Resolve events that repeat (learner, course, ts, impression).

    error: raise listing them; first / last: keep that copy; max_watch: keep the
    copy with the most watch seconds (clicked = 1 if any copy clicked).
    """
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates: policy must be one of {DUPLICATE_POLICIES}, got {policy!r}")
    ev = log.events
    dup = duplicate_event_mask(ev, keep=False)
    n_dup = int(dup.sum())
    if n_dup and policy == "error":
        ex = ev.loc[dup, list(DUPLICATE_KEY)].head(5)
        raise SchemaError(
            [
                Problem(
                    "events",
                    "+".join(DUPLICATE_KEY),
                    DUPLICATE_HINT,
                    n_dup,
                    list(zip(ex.index, ex.itertuples(index=False), strict=True)),
                )
            ]
        )
    if policy in ("first", "last"):
        keep = ~duplicate_event_mask(ev, keep=policy)
        out = ev[keep]
    elif policy == "max_watch":
        key = list(DUPLICATE_KEY)
        any_click = ev.groupby(key, observed=True, sort=False)["clicked"].transform("max")
        order = (
            ev.assign(_w=ev["watch_seconds"].fillna(-1.0))
            .sort_values("_w", ascending=False, kind="stable")
            .index
        )
        best = ~ev.loc[order].duplicated(subset=key, keep="first")
        out = ev.loc[np.sort(order[best.to_numpy()])].assign(clicked=any_click)
    else:
        out = ev
    if report is not None:
        report.add_step(
            "duplicates", "events", len(ev), len(out), policy=policy, rows_in_duplicate_groups=n_dup
        )
    return log.with_events(out)


def restrict_window(log: EventLog, start, end, report: DataReport | None = None) -> EventLog:
    """Keep events with start <= ts < end (the lookback window)."""
    out = log.time_window(start, end)
    if report is not None:
        report.add_step(
            "lookback_window",
            "events",
            len(log.events),
            len(out),
            start=str(pd.Timestamp(start)),
            end=str(pd.Timestamp(end)),
            before_start=int((ts_ns(log.events["ts"]) < utc_ns(start)).sum()),
            at_or_after_end=int((ts_ns(log.events["ts"]) >= utc_ns(end)).sum()),
        )
    return log.with_events(out)


def mark_watched(
    log: EventLog,
    *,
    min_seconds: float | None = 60.0,
    min_fraction: float | None = None,
    report: DataReport | None = None,
) -> EventLog:
    """Add `watched` (bool): the event passes the watch-time threshold. Drops nothing.

    The threshold is min_seconds, or with min_fraction, min_fraction x the course's duration
    (min_seconds for courses without a positive duration). Missing watch time never passes."""
    if min_seconds is None and min_fraction is None:
        raise ValueError("watch threshold: give min_seconds, min_fraction, or both")
    if min_fraction is not None and not 0 < min_fraction <= 1:
        raise ValueError(f"min_watch_fraction must be in (0, 1], got {min_fraction}")
    ev = log.events
    seconds = ev["watch_seconds"].to_numpy(dtype=np.float64, na_value=np.nan)  # NaN never passes
    if min_fraction is not None:
        if "duration_seconds" not in log.courses.columns:
            raise ValueError(
                "min_watch_fraction needs courses.duration_seconds, which this data set lacks; use min_watch_seconds"
            )
        duration = log.courses["duration_seconds"].to_numpy(dtype=np.float64)[
            ev["course_idx"].to_numpy()
        ]
        # A duration of 0 would make any watch (even 0 seconds) pass: like a missing one, it
        # says nothing about the course's length, so both fall back to min_seconds.
        no_duration = ~(duration > 0)
        if no_duration.any() and min_seconds is None:
            course_durations = log.courses["duration_seconds"].to_numpy(dtype=np.float64)
            n_courses = int((~(course_durations > 0)).sum())
            raise ValueError(
                f"min_watch_fraction: {n_courses:,} courses ({int(no_duration.sum()):,} events) have no "
                "positive duration_seconds (missing or 0); also give min_watch_seconds as their fallback"
            )
        threshold = np.where(no_duration, min_seconds, min_fraction * duration)
    else:
        no_duration = None
        threshold = np.full(len(ev), min_seconds, dtype=np.float64)
    watched = seconds >= threshold
    if report is not None:
        some = seconds > 0
        report.add_step(
            "watch_threshold",
            "events",
            len(ev),
            len(ev),
            min_seconds=min_seconds,
            min_fraction=min_fraction,
            with_watch_time=int(some.sum()),
            watched=int(watched.sum()),
            below_threshold=int((some & ~watched).sum()),
            missing_watch_time=int(np.isnan(seconds).sum()),
            **(
                {"min_seconds_for_no_duration": int(no_duration.sum())}
                if no_duration is not None
                else {}
            ),
        )
        if "watched" in ev.columns:  # the caller's own column, or an earlier threshold's
            before = ev["watched"].fillna(False).astype(bool).to_numpy()
            report.note(
                f"events.watched: the column the events had was replaced by the watch-time "
                f"threshold's flag ({int((before != watched).sum()):,} of {len(ev):,} values "
                "changed); rename a column of your own that means something else"
            )
    return log.with_events(ev.assign(watched=watched))


def filter_min_activity(
    log: EventLog,
    *,
    min_learner_watches: int = 0,
    min_course_watches: int = 0,
    iterate: bool = False,
    before=None,
    report: DataReport | None = None,
) -> EventLog:
    """Remove all events of learners / courses with fewer watched events than the minimums.

    Counts are of `watched` events (run `mark_watched` first), only those strictly before
    `before` when it is given (so that events after a split's cutoff cannot decide which
    earlier events stay); a removed learner's or course's events at or after it go too.
    With `iterate`, repeat until both minimums hold (k-core): until a round removes nothing,
    with no cap on the rounds (each removes at least one event, so it ends). Learners and courses stay in
    their tables and id maps; only their events go, and the report says how many of each.
    """
    if "watched" not in log.events.columns:
        raise ValueError("filter_min_activity counts watched events: run mark_watched first")
    ev = log.events
    keep = np.ones(len(ev), dtype=bool)
    li, ci, w = ev["learner_idx"].to_numpy(), ev["course_idx"].to_numpy(), ev["watched"].to_numpy()
    # Events at or after `before` are not counted, but go with their learner or course.
    late = (
        ts_ns(ev["ts"]) >= utc_ns(before) if before is not None else np.zeros(len(ev), dtype=bool)
    )
    counted = w.astype(bool) & ~late
    rounds = 0
    while True:  # each round is vectorized; a round that removes nothing ends the loop
        rounds += 1
        lw = np.bincount(li[keep & counted], minlength=log.n_learners)
        cw = np.bincount(ci[keep & counted], minlength=log.n_courses)
        bad = keep & ((lw[li] < min_learner_watches) | (cw[ci] < min_course_watches))
        if not bad.any():
            break
        keep &= ~bad
        if not iterate:
            break
    out = ev[keep]
    if report is not None:
        report.add_step(
            "min_activity",
            "events",
            len(ev),
            len(out),
            min_learner_watches=min_learner_watches,
            min_course_watches=min_course_watches,
            counted_before=None if before is None else str(utc_timestamp(before)),
            watches_counted=int(counted.sum()),
            watches_not_counted=int((w.astype(bool) & late).sum()),
            removed_at_or_after_before=int((late & ~keep).sum()),
            rounds=rounds,
            learners_removed=int(len(np.unique(li)) - len(np.unique(li[keep]))),
            courses_removed=int(len(np.unique(ci)) - len(np.unique(ci[keep]))),
        )
    return log.with_events(out)
