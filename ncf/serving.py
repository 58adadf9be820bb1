"""Serving helpers for `NCFRecommender`: cutoffs, per-learner candidate tables, long tables,
score statistics, and rebuilding a snapshot from another log (`NCFRecommender.at`).

Everything is vectorized over learners (CSR coordinate remaps, pandas index look-ups); the
only loops are over chunks of learners, so memory is bounded by the chunk, never n x courses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ncf.inputs import Reindex
from watchlog.candidates import COURSE, LEARNER, CandidateError, id_column
from watchlog.eventlog import EventLog
from watchlog.idmap import IdMap, UnknownIdError, positions_in
from watchlog.report import DataReport

if TYPE_CHECKING:
    from ncf.recommender import NCFRecommender

__all__ = [
    "as_cutoff",
    "as_index",
    "index_of",
    "caller_ids",
    "candidate_rows",
    "long_table",
    "score_moments",
    "snapshot_at",
]

_N_EXAMPLES = 5
_log = logging.getLogger(__name__)


# ---- arguments ------------------------------------------------------------------------------
def as_cutoff(cutoff: Any, what: str = "cutoff") -> pd.Timestamp:
    """`cutoff` as a UTC `pd.Timestamp` (a naive one is read as UTC, as the event log does).

    Accepted: pd.Timestamp, datetime, date, np.datetime64 or an ISO string. Numbers are
    refused (an epoch needs a unit), and so are None and NaT."""
    if cutoff is None or isinstance(cutoff, bool | int | float | np.number):
        raise TypeError(
            f"{what}: must be a timestamp (pd.Timestamp, datetime, np.datetime64 or an ISO "
            f"string such as '2024-03-01'); got {cutoff!r} of type {type(cutoff).__name__}"
        )
    if not isinstance(cutoff, str | dt.date | np.datetime64 | pd.Timestamp):
        raise TypeError(f"{what}: must be a timestamp; got {type(cutoff).__name__}")
    try:
        ts = pd.Timestamp(cutoff)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what}: {cutoff!r} is not a parseable timestamp ({e})") from None
    if pd.isna(ts):
        raise ValueError(f"{what}: must not be NaT")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def index_of(ids_map: IdMap, ids: Any, what: str, *, strict: bool = True) -> np.ndarray:
    """(n,) int64 dense indices of `ids`; unknown ids raise `UnknownIdError` naming `what`
    (strict) or map to -1. Ids of another kind than the map's (text against integer ids or
    the reverse: "3" never matches 3) raise a TypeError naming `what`, both kinds and dtypes
    and a few examples (`IdMap.check_kind`), strict or not: a lenient look-up would call
    every id unknown (cold starts, NaN scores) without saying why."""
    index = as_index(ids, what)
    ids_map.check_kind(index, what)
    try:
        return ids_map.to_index(index, strict=strict).astype(np.int64)
    except UnknownIdError as e:
        raise UnknownIdError(what, e.unknown, e.total) from None


def as_index(ids: Any, what: str = "ids") -> pd.Index:
    """A 1-D sequence of ids as a `pd.Index` (no copy for an Index, Series or array)."""
    if isinstance(ids, pd.Index):
        return ids
    if np.ndim(ids) != 1:
        raise TypeError(
            f"{what}: must be a 1-D sequence of ids; got {type(ids).__name__} "
            f"with {np.ndim(ids)} dimensions"
        )
    if isinstance(ids, pd.Series | np.ndarray | pd.api.extensions.ExtensionArray):
        return pd.Index(ids)
    return pd.Index(list(ids))


def caller_ids(ids: Any, ids_map: IdMap, idx: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """The caller's ids as a column of the id map's dtype (never `object`, as the candidate
    table contract wants); `idx` are their dense indices (-1 for ids the map lacks)."""
    if (idx >= 0).all():
        return id_column(ids_map.index, idx)
    values = as_index(ids)
    if values.dtype == object:
        # mixed types stay as they are: validate_candidates then names the column
        with contextlib.suppress(TypeError, ValueError):
            values = values.astype(ids_map.index.dtype)
    return values.array


def check_n(N: Any, *, allow_none: bool = False) -> int | None:
    if N is None and allow_none:
        return None
    if isinstance(N, bool) or not isinstance(N, int | np.integer) or N < 1:
        extra = " or None (every allowed course)" if allow_none else ""
        raise ValueError(f"N: must be a positive int{extra}; got {N!r}")
    return int(N)


# ---- candidates -----------------------------------------------------------------------------
def candidate_rows(
    frame: pd.DataFrame, learner_ids: Sequence[Any], course_ids: IdMap
) -> sp.csr_matrix:
    """(n, n_courses) CSR: row i holds the courses the long table `frame` (learner_id,
    course_id) allows for `learner_ids[i]` (repeats allowed). A learner asked for without
    rows has no allowed course. Rows of learners that were not asked for are ignored, and
    counted: a WARNING (`ncf.serving` logger) gives how many and a few of their ids; when
    none of the frame's learner ids is asked for (an id type or case mismatch, say) it
    raises `CandidateError` (a ValueError). Course ids the model does not know raise
    `UnknownIdError` (filter with `known_courses` first)."""
    absent = [c for c in (LEARNER, COURSE) if c not in frame.columns]
    if absent:
        raise CandidateError(
            f"candidates: column(s) {absent} missing; a per-learner candidates table needs "
            f"{[LEARNER, COURSE]}, the table has {list(frame.columns)}"
        )
    codes, uniques = pd.factorize(as_index(learner_ids, "learner_ids"))  # (n,), (u,) asked
    pos = pd.Index(uniques).get_indexer(pd.Index(frame[LEARNER]))  # (k,) row's learner or -1
    asked = pos >= 0
    if len(uniques) and not asked.all():
        _ignored_rows(frame[LEARNER], asked, pd.Index(uniques))
    course = index_of(course_ids, frame[COURSE][asked], f"candidates.{COURSE}")
    per_learner = sp.csr_matrix(
        (np.ones(len(course), dtype=np.float32), (pos[asked], course)),
        shape=(len(uniques), len(course_ids)),
    )  # (u, n_courses); a repeated pair is summed, its pattern is what counts
    per_learner.sum_duplicates()
    return rows_or_empty(per_learner, codes)  # a missing learner id (-1): no candidates


def rows_or_empty(m: sp.csr_matrix | sp.csr_array, idx: np.ndarray) -> sp.csr_matrix:
    """(len(idx), m.shape[1]) CSR: row i is m[idx[i]], or empty where idx[i] is -1 (an
    unknown learner). The known rows are gathered once and the empty ones inserted through
    the row pointers: no (c x c) diagonal sparse product (two passes over the rows, one of
    them to size the result)."""
    idx = np.asarray(idx, dtype=np.int64)
    known = idx >= 0
    if known.all():
        return sp.csr_matrix(m[idx])
    sub = sp.csr_matrix(m[idx[known]])
    counts = np.zeros(len(idx), dtype=np.int64)
    counts[known] = np.diff(sub.indptr)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((sub.data, sub.indices, indptr), shape=(len(idx), m.shape[1]))


def _ignored_rows(column: pd.Series, asked: np.ndarray, request: pd.Index) -> None:
    """Report the rows of a candidates table whose learner was not asked for: an error when
    that is every row (no learner could get a candidate: always the caller's mistake),
    else a WARNING with the count (a table for more learners than one call serves)."""
    ignored = pd.Index(column)[~asked]  # (k_ignored,) their learner ids
    ids = ignored.unique()
    examples = ids[:_N_EXAMPLES].tolist()
    if not asked.any():
        raise CandidateError(
            f"candidates: none of the table's {len(column):,} rows is for a learner asked for: "
            f"its {len(ids):,} learner id(s) (e.g. {examples}, dtype {column.dtype}) are not "
            f"among the {len(request):,} requested (e.g. {request[:_N_EXAMPLES].tolist()}, "
            f"dtype {request.dtype}); check the ids' type and case"
        )
    _log.warning(
        "candidates: %s of %s rows ignored: their %s learner id(s) (e.g. %s) were not asked for",
        f"{len(ignored):,}", f"{len(column):,}", f"{len(ids):,}", examples,
    )  # fmt: skip


def allowed_count(candidates: Any, n_courses: int) -> int:
    """The most courses any row of a chunk may get: its N when the caller asks for all."""
    if candidates is None:
        return max(n_courses, 1)
    if sp.issparse(candidates):
        lengths = np.diff(sp.csr_matrix(candidates).indptr)
        return max(int(lengths.max(initial=0)), 1)
    return max(len(np.unique(candidates)), 1)


# ---- long tables ----------------------------------------------------------------------------
def long_table(
    learners: pd.api.extensions.ExtensionArray,
    course_index: pd.Index,
    chunks: Iterable[tuple[int, np.ndarray, np.ndarray]],
    prefix: str,
) -> pd.DataFrame:
    """The contract's long table from ranked chunks `(first learner row, top (c, N) course
    indices padded with -1, scores (c, N) float32)`: one row per returned course, learners
    in order, best first; `<prefix>_score` float64, `<prefix>_rank` int64 (1 = best).
    Each chunk is compacted (padding dropped) as it comes, so only the rows are kept."""
    rows, cols, scores, ranks = [], [], [], []
    for lo, top, s in chunks:
        r, k = np.nonzero(top >= 0)  # row-major: each learner's courses best first
        rows.append(lo + r.astype(np.int64))
        cols.append(top[r, k])
        scores.append(s[r, k].astype(np.float64))
        ranks.append(k.astype(np.int64) + 1)  # padding is only ever at the end of a row
    empty = np.zeros(0, dtype=np.int64)
    rows_all = np.concatenate(rows) if rows else empty
    return pd.DataFrame(
        {
            LEARNER: learners.take(rows_all),
            COURSE: id_column(course_index, np.concatenate(cols) if cols else empty),
            f"{prefix}_score": np.concatenate(scores) if scores else np.zeros(0),
            f"{prefix}_rank": np.concatenate(ranks) if ranks else empty,
        }
    )


def score_moments(s: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of `s` (c, m): mean, standard deviation (population, ddof 0) and log-sum-exp,
    in float64 (a float32 sum over a large catalogue loses digits the z-score needs)."""
    s64 = s.to(torch.float64, copy=True)  # (c, m) ours: changed in place below
    mean = s64.mean(dim=1)  # (c,)
    lse = torch.logsumexp(s64, dim=1)  # (c,) max-shifted, so large scores do not overflow
    s64 -= mean[:, None]  # in place: one (c, m) float64 buffer, not three
    std = s64.square_().mean(dim=1).sqrt()  # two-pass: no cancellation
    return tuple(t.cpu().numpy() for t in (mean, std, lse))  # type: ignore[return-value]


# ---- another log, a later cutoff ------------------------------------------------------------
def snapshot_at(
    rec: NCFRecommender,
    log: EventLog,
    cutoff: pd.Timestamp,
    report: DataReport | None,
):
    """The snapshot `rec.at` serves: `rec.inputs` applied to `log` before `cutoff`, in the
    model's course index; returns (snapshot, learner id map, serving report dict). Its rows
    are the log's learners; with learner ID embeddings, the model's learners at their ID rows
    (those absent from the log with an empty history) followed by the log's others, which
    have no ID row. The report counts what the log had that the model does not know (never
    silent: a warning for watches left out of learner vectors)."""
    if "watched" not in log.events.columns:
        raise ValueError(
            "log: no `watched` column; at() needs a cleaned log (watchlog.cleaning.clean)"
        )
    courses = Reindex.between(log.course_ids, rec.course_ids)
    if log.n_courses and (courses.target < 0).all():
        raise ValueError(
            f"log: none of its {log.n_courses:,} course ids is known to the model "
            f"(log ids {log.course_ids.index.dtype}, e.g. {log.course_ids.index[:3].tolist()}; "
            f"model ids {rec.course_ids.index.dtype}, e.g. {rec.course_ids.index[:3].tolist()})"
        )
    id_model = rec.model.learner_tower.ids is not None
    if id_model:
        # A learner's ID row is its index below model.n_learners: the model's learners keep
        # theirs (the first n_learners ids of `rec`'s map, in order), the log's others follow
        # them without one (a zero ID vector: served from their history, as a model without
        # ID embeddings serves every learner). The order is kept: IdMap.ordered, not sorted.
        own = rec.learner_ids.index[: rec.model.n_learners]
        new = positions_in(own, log.learner_ids.index) < 0  # (log_learners,) no ID row
        ids = own.append(log.learner_ids.index[new])
        learner_ids = IdMap.ordered(ids, name=rec.learner_ids.name)
        learners = Reindex.between(log.learner_ids, learner_ids)
    else:  # a learner is its history: serve the log's learners
        new = rec.learner_ids.to_index(log.learner_ids.index, strict=False) < 0  # not in `rec`
        learner_ids, learners = log.learner_ids, None
    snap = rec.inputs.inference_snapshot(log, cutoff, learners=learners, courses=courses)

    # What was dropped, counted on the watch events before the cutoff (never silent).
    events = log.time_window(end=cutoff)
    events = events[events["watched"].to_numpy()]
    course_lost = courses.target[events["course_idx"].to_numpy()] < 0  # (n_watched,)
    unknown_courses = log.course_ids.index[courses.dropped]
    in_log = np.zeros(len(rec.course_ids), dtype=bool)
    in_log[courses.target[courses.target >= 0]] = True
    new_watch = new[events["learner_idx"].to_numpy()]  # (n_watched,)
    out: dict[str, Any] = {
        "cutoff": str(cutoff),
        "model_cutoff": None if rec.model_cutoff is None else str(rec.model_cutoff),
        "log_learners": int(log.n_learners),
        "log_courses": int(log.n_courses),
        "watched_events": int(len(events)),
        "unknown_courses": int(len(unknown_courses)),
        "unknown_course_examples": unknown_courses[:_N_EXAMPLES].tolist(),
        "unknown_course_watches": int(course_lost.sum()),
        "model_courses_not_in_log": int((~in_log).sum()),
        "new_learners": int(new.sum()),
        "new_learner_examples": log.learner_ids.index[new][:_N_EXAMPLES].tolist(),
        "new_learner_watches": int(new_watch.sum()),
    }
    if id_model:
        model_in_log = np.zeros(rec.model.n_learners, dtype=bool)
        model_in_log[learners.target[learners.target < rec.model.n_learners]] = True
        out["learner_id_rows"] = int(rec.model.n_learners)
        out["model_learners_not_in_log"] = int((~model_in_log).sum())  # ID row, no history
    # Without a history input (pure ID embeddings: MF) a new learner's watches cannot reach
    # its vector: it gets the cold-start list; its watches count for `seen` and co-watch only.
    history_input = rec.model.learner_tower.bag is not None
    unused = out["new_learner_watches"] if id_model and not history_input else 0
    lost_watches = out["unknown_course_watches"] + unused
    parts = []
    if out["unknown_course_watches"]:
        parts.append(
            f"{out['unknown_course_watches']:,} of {len(events):,} watches before the cutoff "
            f"are of {out['unknown_courses']:,} courses the model does not know (e.g. "
            f"{out['unknown_course_examples']}); they are left out of histories, `seen` and "
            "co-watch bags"
        )
    if unused:
        parts.append(
            f"{out['new_learners']:,} learners have no learner-ID row and the model has no "
            f"history input (e.g. {out['new_learner_examples']}): they are served the "
            f"cold-start list (empty history, zero ID vector); {unused:,} of their watches "
            "count for `seen` and co-watch only"
        )
    message = f"NCFRecommender.at({cutoff}): " + "; ".join(parts)
    if lost_watches:
        warnings.warn(message, UserWarning, stacklevel=3)
    if report is not None:
        report.add_step(
            f"ncf serving at {cutoff}: drop watches of courses the model does not know",
            "watched events",
            before=len(events),
            after=len(events) - out["unknown_course_watches"],
            unknown_courses=out["unknown_courses"],
        )
        if lost_watches:
            report.note(message)
    return snap, learner_ids, out
