"""Popularity at a cutoff: the `log_popularity` feature and the fallback lists.

    pop = Popularity.at(log, cutoff, lookback_days=90, group_columns=("segment", "language"))
    pop.log_count[course_idx]                    # (n,) log1p(watches in the window)
    pairs = pop.fallback_pairs(learner_idx, k=10, exclude=seen)   # ragged (learner, course, source)

Counts are watches (the cleaned log's `watched` flag) in [cutoff - lookback, cutoff), so the
feature and the fallback never look past the cutoff. A learner's group is its value of
`group_columns` in the learners table (e.g. segment and language): "popular in the learner's
segment and language" is the courses most watched by learners of the same group. Groups are few
(tens), so per-group lists are computed once; the per-learner lists are gathered from them with
array arithmetic, never a loop per learner.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from watchlog import EventLog
from watchlog.eventlog import utc_timestamp

_log = logging.getLogger(__name__)

__all__ = ["Popularity", "GLOBAL", "GROUP"]

GROUP = "popular_segment"  # source names of fallback rows
GLOBAL = "popular_global"


@dataclass(frozen=True, eq=False)
class Popularity:
    """Course watch counts before a cutoff, globally and per learner group.

    count: (n_courses,) float64; group_of: (n_learners,) int64 group code (-1: a value is
    missing); group_count: (n_groups, n_courses); groups: the group values (one row each)."""

    count: np.ndarray
    group_of: np.ndarray
    group_count: np.ndarray
    groups: pd.DataFrame
    cutoff: pd.Timestamp

    @classmethod
    def at(
        cls,
        log: EventLog,
        cutoff,
        *,
        lookback_days: float | None = None,
        group_columns: Sequence[str] = ("segment", "language"),
    ) -> Popularity:
        """Counts from `log`'s watched events in [cutoff - lookback_days, cutoff)."""
        cutoff = utc_timestamp(cutoff)  # a naive cutoff is UTC, as the events are
        start = None if lookback_days is None else cutoff - pd.Timedelta(days=lookback_days)
        return cls.from_events(
            log, log.time_window(start, cutoff), cutoff, group_columns=group_columns
        )

    @classmethod
    def from_events(
        cls,
        log: EventLog,
        events: pd.DataFrame,
        reference_time,
        *,
        group_columns: Sequence[str] = ("segment", "language"),
    ) -> Popularity:
        """Counts from the watched rows of `events` (a fold's inputs, a time window);
        `reference_time` is the moment they describe (the cutoff)."""
        if "watched" not in events.columns:
            raise ValueError("Popularity: the events have no `watched` column; clean them first")
        watched = events[events["watched"].to_numpy()]
        columns = [c for c in group_columns if c in log.learners.columns]
        absent = [c for c in group_columns if c not in log.learners.columns]
        if absent:  # a typo, or data without the column: the lists are grouped by fewer
            _log.warning(
                "Popularity: group column(s) %s are not in the learner table (its columns: %s); "
                "popular lists are grouped by %s (blend.candidates.group_columns names them)",
                absent, list(log.learners.columns), columns or "nothing: one global list",
            )  # fmt: skip
        if columns:
            codes, groups = _group_codes(log.learners, columns)
        else:  # no group column at all: one group, which is the global list
            codes, groups = np.zeros(log.n_learners, dtype=np.int64), pd.DataFrame(index=[0])
        n_groups = len(groups)
        li = watched["learner_idx"].to_numpy(np.int64)
        ci = watched["course_idx"].to_numpy(np.int64)
        g = codes[li]
        ok = g >= 0
        group_count = sp.csr_matrix(
            (np.ones(int(ok.sum())), (g[ok], ci[ok])), shape=(n_groups, log.n_courses)
        ).toarray()  # (n_groups, n_courses): tens x thousands
        count = np.bincount(ci, minlength=log.n_courses).astype(np.float64)
        return cls(count, codes, group_count, groups, utc_timestamp(reference_time))

    @property
    def log_count(self) -> np.ndarray:
        """(n_courses,) log1p(watches): the blender's popularity feature."""
        return np.log1p(self.count)

    def fallback_pairs(
        self,
        learner_idx: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """Up to k courses per learner, best first: the learner's group's most watched, then
        the globally most watched to fill, never a course in `exclude` (learner x course, e.g.
        already watched) nor one outside `allowed` ((n_courses,) bool, e.g. the courses a model
        can score: the next most watched take their places). Learners with index -1 (not in
        the learner table) or a missing group value get the global list only.

        Returns columns learner (position in `learner_idx`), course_idx, rank (1-based),
        source ("popular_segment" | "popular_global"); courses with no watch at all are never
        returned, so a list can be shorter than k.

        Work and memory follow the chunk: only `learner_idx`'s rows of `exclude` are read,
        and each learner reads k + its own excluded count of each list (not k + the chunk's
        largest)."""
        learner_idx = np.asarray(learner_idx, dtype=np.int64)
        n = len(learner_idx)
        # Only the chunk's rows of `exclude` are read (memory and time follow the chunk, not
        # the whole matrix); row p is learner_idx[p]'s, empty for a learner not in the table.
        excluded = None
        if exclude is not None and n:
            excluded = exclude.tocsr()[np.maximum(learner_idx, 0)]
            excluded = excluded.multiply((learner_idx >= 0)[:, None]).tocsr()
            excluded.eliminate_zeros()
        group = np.where(learner_idx >= 0, self.group_of[np.maximum(learner_idx, 0)], -1)
        group_count, count = self.group_count, self.count
        if allowed is not None:  # a course not allowed counts as never watched
            allowed = np.asarray(allowed)
            if allowed.shape != count.shape or allowed.dtype != np.bool_:
                raise ValueError(
                    f"allowed: ({len(count):,},) bool, one per course; got {allowed.dtype} "
                    f"{allowed.shape}"
                )
            group_count, count = group_count * allowed, count * allowed
        # Each learner reads k + (its own excluded courses) of each list: at most that many
        # are removed from the group list, and at most that many plus the group's courses it
        # kept are skipped in the global list, so k remain whenever k exist (one heavy
        # learner no longer sizes every learner's share).
        n_excluded = np.zeros(n, np.int64) if excluded is None else np.diff(excluded.indptr)
        parts = []
        for source, counts, owner in (
            (GROUP, group_count, group),
            (GLOBAL, count[None, :], np.zeros(n, dtype=np.int64)),
        ):
            lists = _top(counts, counts.shape[1])  # (n_lists, n_courses): tens x thousands
            pos = np.flatnonzero(owner >= 0)  # (m,) learners with such a list
            length = np.minimum(k + n_excluded[pos], lists.shape[1])
            learner = np.repeat(pos, length)
            at = _ragged_arange(length)  # position in the list
            parts.append((source, learner, lists[owner[learner], at], at))
        learner = np.concatenate([p[1] for p in parts])
        course = np.concatenate([p[2] for p in parts])
        width = len(self.count) + 1  # any offset past the longest list: group rows come first
        order_in = np.concatenate([p[3] + i * width for i, p in enumerate(parts)])
        source = np.concatenate([np.full(len(p[1]), i, dtype=np.int8) for i, p in enumerate(parts)])
        keep = course >= 0
        if excluded is not None:
            keep &= ~_in_rows(excluded, learner, course)
        learner, course, order_in, source = (a[keep] for a in (learner, course, order_in, source))
        # One row per (learner, course): the group row wins over the global one (it comes first).
        order = np.lexsort((order_in, learner))
        learner, course, source = learner[order], course[order], source[order]
        key = learner * (len(self.count) + 1) + course
        first = ~pd.Index(key).duplicated()
        learner, course, source = learner[first], course[first], source[first]
        # rank within learner, keep k
        start = np.r_[0, np.flatnonzero(learner[1:] != learner[:-1]) + 1]
        size = np.diff(np.r_[start, len(learner)])
        rank = np.arange(len(learner)) - np.repeat(start, size) + 1
        keep = rank <= k
        names = np.array([GROUP, GLOBAL])
        return pd.DataFrame(
            {
                "learner": learner[keep],
                "course_idx": course[keep],
                "rank": rank[keep],
                "source": names[source[keep]],
            }
        )


def _group_codes(learners: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    frame = learners[columns].astype("string")
    missing = frame.isna().any(axis=1).to_numpy()
    keys = pd.MultiIndex.from_frame(frame.fillna(""))
    codes, uniques = pd.factorize(keys, sort=True)
    codes = np.where(missing, -1, codes).astype(np.int64)
    return codes, pd.DataFrame(list(uniques), columns=columns)


def _top(counts: np.ndarray, k: int) -> np.ndarray:
    """(rows, min(k, n_courses)) course indices by count, best first (ties: lower index);
    -1 where the count is 0."""
    k = min(k, counts.shape[1])
    order = np.argsort(-counts, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(counts, order, axis=1) > 0, order, -1)


def _ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """0..lengths[0]-1, 0..lengths[1]-1, ... concatenated."""
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - starts


def _in_rows(m: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n,) bool: is (rows[i], cols[i]) a stored entry of CSR m? Rows -1 are never in m."""
    m = sp.csr_matrix(m)
    if m.nnz == 0:  # e.g. a chunk of learners without history: nothing to look up
        return np.zeros(len(rows), dtype=bool)
    m.sort_indices()
    r = np.maximum(rows, 0)
    n_cols = m.shape[1]
    entry_rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    keys = entry_rows * n_cols + m.indices  # sorted: rows ascending, columns sorted within
    query = r * n_cols + cols
    pos = np.searchsorted(keys, query)
    hit = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == query)
    return hit & (rows >= 0)
