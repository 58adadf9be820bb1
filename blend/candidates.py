"""Candidates for a chunk of learners at a cutoff: the two-tower's top-N plus the fallback lists.

    table = build_candidates(learner_ids, retriever, log=log, seen=seen, popularity=pop,
                             n_retrieve=200, n_fallback=20)

The result is the long candidate table of `watchlog.candidates` (ids in the caller's dtype,
learners contiguous, in the given order) with

    ncf_score          the two-tower's score of the pair (also for fallback-only rows)
    ncf_rank           its retrieval rank, 1..N; n_retrieve + 1 for pairs it did not retrieve
    retrieved          True for the two-tower's top-N pairs
    fallback_rank      rank in the learner's popular list (segment first, then global); NaN if
                       the pair is not in it
    fallback_source    "popular_segment" | "popular_global" | "" (not a fallback pair)

`blend` takes scores, not models: the retriever is any object with the methods of `Retriever`
(the two-tower's `NCFRecommender` has them); nothing here imports a model package.

Serving a log newer than the model (`rec.at(newer_log, cutoff)`): a popular course the two-tower
was not trained on cannot be scored, so it is left out of the fallback lists (the next most
watched take its place), counted (`table.attrs["fallback_courses_unscorable"]`) and warned about
with examples, never an exception in a batch; retrain the two-tower to serve new courses. A
retrieved course missing from the log's course table is a broken retriever or log:
`UnknownIdError` names it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from blend.popularity import Popularity
from watchlog import EventLog
from watchlog.candidates import COURSE, LEARNER, id_column, validate_candidates
from watchlog.idmap import UnknownIdError

__all__ = ["Retriever", "as_learner_ids", "build_candidates", "seen_before", "seen_in"]

_log = logging.getLogger(__name__)


class Retriever(Protocol):
    """What the blender needs from a retrieval model, in the caller's ids."""

    def recommend_table(
        self, learner_ids: Sequence[Any], N: int, *, filter_already_watched: bool = True
    ) -> pd.DataFrame:  # learner_id, course_id, ncf_score, ncf_rank
        ...

    def score(self, learner_ids: Sequence[Any], course_ids: Sequence[Any]) -> np.ndarray: ...

    def known_courses(self, course_ids: Sequence[Any]) -> np.ndarray:  # (n,) bool: scorable
        ...


def seen_before(log: EventLog, cutoff) -> sp.csr_matrix:
    """(n_learners, n_courses) CSR of every course a learner watched before `cutoff`: what a
    list must not contain (the same rule as the two-tower's `filter_already_watched`)."""
    return seen_in(log, log.time_window(None, cutoff))


def seen_in(log: EventLog, events: pd.DataFrame) -> sp.csr_matrix:
    """(n_learners, n_courses) CSR, 1 where the learner watched the course in `events` (a
    fold's inputs)."""
    m = log.interactions(events[events["watched"].to_numpy()])
    m.data[:] = 1.0
    return m


def as_learner_ids(learner_ids: Sequence[Any], log: EventLog) -> pd.Index:
    """The learner ids as an Index of the log's id dtype family (never `object`: an empty
    list or a list of Python strings would otherwise be one). Ids of another kind than the
    log's (text '3' against integer 3) raise a TypeError naming both kinds: none would match,
    and every learner would silently be served as unknown."""
    ids = pd.Index(learner_ids)
    if len(ids) == 0:
        return pd.Index([], dtype=log.learner_ids.index.dtype)
    if pd.api.types.is_object_dtype(ids.dtype) and all(isinstance(i, str) for i in ids):
        ids = ids.astype("str")
    log.learner_ids.check_kind(ids, "learner_ids")
    return ids


def unique_learner_ids(learner_ids: Sequence[Any], log: EventLog) -> pd.Index:
    """`as_learner_ids`, refusing a learner asked for twice (its lists would be repeated)."""
    ids = as_learner_ids(learner_ids, log)
    if ids.has_duplicates:
        raise ValueError(
            f"learner_ids: {int(ids.duplicated().sum()):,} repeated ids (e.g. "
            f"{ids[ids.duplicated()].unique()[:5].tolist()}); ask for each learner once"
        )
    return ids


def build_candidates(
    learner_ids: Sequence[Any],
    retriever: Retriever,
    *,
    log: EventLog,
    seen: sp.csr_matrix,
    popularity: Popularity,
    n_retrieve: int = 200,
    n_fallback: int = 20,
) -> pd.DataFrame:
    """Candidates of `learner_ids` (see the module docstring). Learners unknown to the log's
    learner table still get the global fallback list; the retriever is asked about every
    learner (it decides how to serve one without history: an `NCFRecommender` with
    cold_start='error', its default, raises `UnknownIdError` for one it has no row for)."""
    ids = unique_learner_ids(learner_ids, log)
    n_courses = log.n_courses
    try:
        retrieved = retriever.recommend_table(ids, n_retrieve, filter_already_watched=True)
    except UnknownIdError as err:  # say how to serve them, not only that they are unknown
        hint = (
            "The retriever refuses learners it has no row for: build the NCFRecommender with "
            "cold_start='empty_history' to serve them its cold-start list, which the fallback "
            "chain replaces with the popular lists"
        )
        raise UnknownIdError(err.what, err.unknown, err.total, hint) from err
    # A broken model's NaN must not pass as "not retrieved, score it again".
    validate_candidates(retrieved, score_columns=["ncf_score"], name="retriever.recommend_table")
    pos_r = ids.get_indexer(pd.Index(retrieved[LEARNER]))  # (m,) row of each pair's learner
    if (pos_r < 0).any():
        raise ValueError("retriever returned learners that were not asked for")
    course_r = log.course_ids.to_index(retrieved[COURSE]).astype(np.int64)  # unknown: named

    learner_idx = log.learner_ids.to_index(ids, strict=False).astype(np.int64)  # -1: unknown
    # Popular courses the two-tower cannot score (newer than the model) give way to the next.
    scorable = np.asarray(retriever.known_courses(log.course_ids.index), dtype=bool)  # (n_courses,)
    unscorable = np.flatnonzero(~scorable & (popularity.count > 0))  # watched in the window
    if unscorable.size:
        _log.warning(
            "candidates: %s courses watched in the popularity window are unknown to the "
            "two-tower (newer than the model), e.g. %s; left out of the fallback lists, the "
            "next most watched take their places (retrain the two-tower to serve them)",
            f"{unscorable.size:,}", id_column(log.course_ids.index, unscorable[:5]).tolist(),
        )  # fmt: skip
    fb = popularity.fallback_pairs(learner_idx, n_fallback, exclude=seen, allowed=scorable)

    # Union of both lists on (learner position, course) keys.
    key_r = pos_r * n_courses + course_r
    key_f = fb["learner"].to_numpy(np.int64) * n_courses + fb["course_idx"].to_numpy(np.int64)
    keys = np.union1d(key_r, key_f)  # sorted: learner position, then course
    in_r = np.searchsorted(keys, key_r)
    in_f = np.searchsorted(keys, key_f)
    m = len(keys)
    ncf_score = np.full(m, np.nan)
    ncf_score[in_r] = retrieved["ncf_score"].to_numpy(np.float64)
    ncf_rank = np.full(m, float(n_retrieve + 1))
    ncf_rank[in_r] = retrieved["ncf_rank"].to_numpy(np.float64)
    was_retrieved = np.zeros(m, dtype=bool)
    was_retrieved[in_r] = True
    fallback_rank = np.full(m, np.nan)
    fallback_rank[in_f] = fb["rank"].to_numpy(np.float64)
    fallback_source = np.full(m, "", dtype=object)
    fallback_source[in_f] = fb["source"].to_numpy()
    learner_pos, course_idx = keys // n_courses, keys % n_courses

    missing = np.isnan(ncf_score)  # fallback pairs the retriever did not return: score them
    if missing.any():
        ncf_score[missing] = retriever.score(
            ids.take(learner_pos[missing]), id_column(log.course_ids.index, course_idx[missing])
        )
    # Within a learner: retrieval order first, then the fallback-only pairs by fallback rank.
    order = np.lexsort((np.nan_to_num(fallback_rank, nan=np.inf), ncf_rank, learner_pos))
    table = pd.DataFrame(
        {
            LEARNER: ids.take(learner_pos[order]).array,
            COURSE: id_column(log.course_ids.index, course_idx[order]),
            "ncf_score": ncf_score[order],
            "ncf_rank": ncf_rank[order],
            "retrieved": was_retrieved[order],
            "fallback_rank": fallback_rank[order],
            "fallback_source": pd.array(fallback_source[order], dtype="str"),
        }
    )
    has = np.zeros(len(ids), dtype=bool)
    has[learner_pos] = True
    if not has.all():  # no retrieved pair and no fallback course left: no list at all
        _log.warning(
            "candidates: %s of %s learners have none (nothing retrieved, every fallback course "
            "already watched or no popularity counts), e.g. %s; they get no list",
            f"{int((~has).sum()):,}", f"{len(ids):,}", ids[~has][:5].tolist(),
        )  # fmt: skip
    table.attrs["learners_without_candidates"] = int((~has).sum())
    table.attrs["fallback_courses_unscorable"] = int(unscorable.size)
    return table
