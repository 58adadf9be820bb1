"""Judging lists and scores on a window's labels, and the tournament between two versions.

    truth = window_truth(log, fold, seen, gain="watch_seconds")   # learner x course CSR
    labels, gains = candidate_labels(table, log, truth)           # (n,) per candidate
    res = list_metrics(lists, log, truth, ks=(10,))               # evaluation.RankingMetrics
    auc = candidate_auc(table, "blend_score", labels)             # mean per-learner AUC
    t = tournament(res_current, res_proposed, "ndcg@10")          # paired bootstrap, 10,000

Truth: the courses a learner watched (the cleaned log's `watched` flag) in the fold's label
window, minus those watched before the cutoff (lists never hold them); the gain is the
pair's watched seconds in the window ("watch_seconds"; a watch without a positive watch time
counts 1 second, so it stays a label) or 1 ("binary"). Metrics come from
`evaluation` (the same code as every model stage), so figures are comparable across stages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from evaluation import PairedComparison, RankingMetrics, paired_bootstrap, per_entity_auc
from evaluation import ranking_metrics as _ranking_metrics
from watchlog import EventLog
from watchlog.candidates import COURSE, LEARNER, learner_bounds
from watchlog.splits import Fold

_log = logging.getLogger(__name__)

__all__ = [
    "GAINS",
    "window_truth",
    "candidate_labels",
    "list_metrics",
    "indexed_list_metrics",
    "row_indices",
    "candidate_auc",
    "tournament",
    "aligned",
]

GAINS = ("watch_seconds", "binary")


def window_truth(
    log: EventLog, fold: Fold, seen: sp.csr_matrix, *, gain: str = "watch_seconds"
) -> sp.csr_matrix:
    """(n_learners, n_courses) CSR float32 of the fold's label watches (see module doc)."""
    if gain not in GAINS:
        raise ValueError(f"gain: must be one of {GAINS}, got {gain!r}")
    lab = fold.labels[fold.labels["watched"].to_numpy(bool)]
    weights = None
    if gain == "watch_seconds":
        # a watch without a positive watch time (unknown, or 0 with min_watch_seconds=0) is
        # still a label: its gain is 1 second, not 0 (a zero would drop it from the truth)
        seconds = lab["watch_seconds"].to_numpy(np.float32, na_value=np.nan)
        weights = np.where(np.isfinite(seconds) & (seconds > 0), seconds, np.float32(1.0))
        n_floor = int((weights != seconds).sum())
        if n_floor:
            _log.info("window_truth %s: %s of %s label watches have no positive watch time; "
                      "gain 1 s each", fold.name, f"{n_floor:,}", f"{len(lab):,}")  # fmt: skip
    m = log.interactions(lab, weights)
    if gain == "binary":
        m.data[:] = 1.0
    m = (m - m.multiply(seen > 0)).tocsr()  # a course watched before the cutoff is no label
    m.eliminate_zeros()
    return m.astype(np.float32)


def row_indices(log: EventLog, frame: pd.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(learner index, -1 if unknown; course index) of each row. Learner ids of another kind
    than the log's raise a TypeError (they would all be unknown: no labels, empty lists)."""
    log.learner_ids.check_kind(frame[LEARNER], f"{what}.{LEARNER}")
    learner = log.learner_ids.to_index(frame[LEARNER], strict=False).astype(np.int64)
    course = log.course_ids.to_index(frame[COURSE]).astype(np.int64)
    return learner, course


def candidate_labels(
    table: pd.DataFrame, log: EventLog, truth: sp.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,) int8, gains (n,) float64) of each candidate from a truth matrix; learners
    unknown to the log have no labels."""
    return indexed_labels(*row_indices(log, table, "candidate_labels: table"), truth)


def indexed_labels(
    learner: np.ndarray, course: np.ndarray, truth: sp.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    """`candidate_labels` of rows already mapped to (learner index, -1 if unknown; course
    index), (n,) each: a caller labelling one table by several truths maps its ids once."""
    gains = np.zeros(len(learner))
    ok = learner >= 0
    gains[ok] = np.asarray(truth[learner[ok], course[ok]]).ravel()
    return (gains > 0).astype(np.int8), gains


def list_metrics(
    lists: pd.DataFrame,
    log: EventLog,
    truth: sp.csr_matrix,
    *,
    ks: Sequence[int] = (10,),
    learners: np.ndarray | None = None,
) -> RankingMetrics:
    """Ranking metrics of ranked lists (learner_id, rank, course_id) against `truth`.

    learners: the learner indices to judge (default: every learner with truth); a learner
    without a list counts as an empty list (all misses), never as skipped."""
    learner, course = row_indices(log, lists, "list_metrics: lists")
    rank = lists["rank"].to_numpy(np.int64)
    return indexed_list_metrics(learner, course, rank, truth, ks=ks, learners=learners)


def indexed_list_metrics(
    learner: np.ndarray,
    course: np.ndarray,
    rank: np.ndarray,
    truth: sp.csr_matrix,
    *,
    ks: Sequence[int] = (10,),
    learners: np.ndarray | None = None,
) -> RankingMetrics:
    """`list_metrics` of lists given as (r,) arrays: learner index (-1: unknown, left out),
    course index and 1-based rank of each listed course. For a caller that judges many
    rankings of one table (`blend.selection.LabelledPoint.judge`) and maps its ids once."""
    if learners is None:
        learners = np.flatnonzero(np.diff(truth.indptr) > 0)
    learners = np.asarray(learners, dtype=np.int64)
    k = max(ks)
    topk = np.full((len(learners), k), -1, dtype=np.int64)  # (n, k) course index, -1 padding
    row = pd.Index(learners).get_indexer(learner)
    ok = (row >= 0) & (rank <= k)
    topk[row[ok], rank[ok] - 1] = course[ok]
    # ranks are 1..n per learner, so padding is only at the end of a row
    return _ranking_metrics(topk, truth, ks, users=learners)


def candidate_auc(table: pd.DataFrame, score_column: str, labels: np.ndarray) -> float:
    """Mean over learners of the AUC of `score_column` separating each learner's labelled
    candidates from the rest (learners without both classes are skipped)."""
    labels = np.asarray(labels)
    if labels.shape != (len(table),):
        raise ValueError(
            f"labels: expected shape ({len(table)},), one per candidate; got {labels.shape}"
        )
    has = labels > 0
    bounds = learner_bounds(table)
    sizes = np.diff(bounds)
    group = np.repeat(np.arange(len(sizes)), sizes)
    pos = np.bincount(group, weights=has, minlength=len(sizes))
    keep = ((pos > 0) & (pos < sizes))[group]
    if not keep.any():
        return float("nan")
    res = per_entity_auc(group[keep], labels[keep], table[score_column].to_numpy(np.float64)[keep])
    return res.mean


def aligned(a: RankingMetrics, b: RankingMetrics, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The per-learner values of `metric` of two evaluations, on the learners both judged."""
    common, ia, ib = np.intersect1d(a.users, b.users, return_indices=True)
    if len(common) == 0:
        raise ValueError("aligned: the two evaluations share no learner")
    return a.per_user[metric][ia], b.per_user[metric][ib]


def tournament(
    current: RankingMetrics,
    proposed: RankingMetrics,
    metric: str = "ndcg@10",
    *,
    n_boot: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Proposed against current on the same learners: the paired bootstrap over learners
    (`evaluation.paired_bootstrap`): mean difference (proposed - current), its 95% interval
    and the win rate (share of resamples in which proposed is ahead)."""
    cur, new = aligned(current, proposed, metric)
    return paired_bootstrap(new, cur, n_boot=n_boot, seed=seed)
