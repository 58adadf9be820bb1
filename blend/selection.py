"""Fit blenders on one window, judge them on a later one, keep the best settings.

    fit_pt = LabelledPoint.from_table(table_blend, log, truth_blend)   # the blend window
    val_pt = LabelledPoint.from_table(table_valid, log, truth_valid)   # the validation window
    results = compare(variants, fit_pt, val_pt)     # every variant fitted, then judged
    best = best_by_kind(results)                    # kind -> the variant best on validation

    # no later window (random / stratified splits): the window's labels divided at random
    # several times; a variant's validation figures are its means over the divisions
    draws = label_draws(whole, 0.5, 4, seed=seed)   # [(fit, judge)] * 4
    results = compare_draws(variants, draws)

A variant is a named blender with its settings (`Variant("personalized", "learner_l2=30",
PersonalizedBlender(...))`); `variants_grid` expands settings grids. Blenders are fitted on
the candidates of learners with at least one label in the window (learners with none teach
nothing about order; they are counted), with watch-time sample weights as GLMix uses:
1 + log1p(watched seconds / 60) for a watched candidate, 1 otherwise. They are judged by the
mean per-learner NDCG@10 of their top 10 (gain = watched seconds) over every learner with a
label in the judging window.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import clone

from blend.evaluate import (
    candidate_auc,
    candidate_labels,
    indexed_labels,
    indexed_list_metrics,
    row_indices,
)
from blend.lists import ranking_keys, top_rows
from evaluation import RankingMetrics
from glmix import watch_time_weights
from watchlog import EventLog
from watchlog.candidates import learner_bounds, validate_candidates

__all__ = [
    "LabelledPoint",
    "Variant",
    "VariantResult",
    "compare",
    "compare_draws",
    "best_by_kind",
    "label_draws",
]


@dataclass(frozen=True, eq=False)
class LabelledPoint:
    """Scored candidates at a cutoff and what happened after it."""

    table: pd.DataFrame
    log: EventLog
    truth: sp.csr_matrix  # (n_learners, n_courses) gains of the window (blend.evaluate)
    labels: np.ndarray  # (n,) int8 per candidate
    gains: np.ndarray  # (n,) float64 per candidate

    @classmethod
    def from_table(cls, table: pd.DataFrame, log: EventLog, truth: sp.csr_matrix):
        """The table is checked against the candidate contract (one row per pair, each
        learner's rows together): every blender and judgement of the point relies on it."""
        validate_candidates(table, name="LabelledPoint table")
        labels, gains = candidate_labels(table, log, truth)
        return cls(table, log, truth, labels, gains)

    def fit_rows(self) -> tuple[np.ndarray, dict[str, int]]:
        """(rows of learners with a label, counts)."""
        bounds = learner_bounds(self.table)
        sizes = np.diff(bounds)
        group = np.repeat(np.arange(len(sizes)), sizes)
        has = np.bincount(group, weights=self.labels, minlength=len(sizes)) > 0
        rows = np.flatnonzero(has[group])
        return rows, {
            "learners": int(len(sizes)),
            "learners_with_labels": int(has.sum()),
            "rows": int(len(rows)),
            "positives": int(self.labels.sum()),
        }

    def sample_weight(self, rows: np.ndarray) -> np.ndarray:
        y = self.labels[rows]
        return watch_time_weights(y, self.gains[rows], kind="log1p", scale=60.0).weights

    def split_labels(
        self, fraction: float, seed: int | Sequence[int] = 0
    ) -> tuple[LabelledPoint, LabelledPoint]:
        """(fit, judge): the same candidates with the window's labelled pairs divided at
        random, `fraction` of them to judge on. For splits without a later window to choose
        settings on (random / stratified): fit on one part, judge on the other. seed: an int
        or a sequence of ints (`numpy.random.default_rng`), e.g. (run seed, draw number)."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction: must be in (0, 1), got {fraction}")
        t = self.truth.tocsr()
        held = np.random.default_rng(seed).random(t.nnz) < fraction  # (nnz,) one draw a pair

        def part(mask: np.ndarray) -> sp.csr_matrix:
            m = t.copy()
            m.data = np.where(mask, m.data, 0.0).astype(m.dtype)
            m.eliminate_zeros()
            return m

        return self._with_truth(part(~held)), self._with_truth(part(held))

    def _with_truth(self, truth: sp.csr_matrix) -> LabelledPoint:
        """The same (already checked) candidates labelled by another truth. The table's
        judging keys (its ids mapped to indices among them) are shared, not recomputed: every
        division of the labels (label_draws) adds only its labels and gains, 9 bytes a
        candidate, not 32 more of keys."""
        keys = self._judge_keys  # (group, course order, learner index, course index)
        out = LabelledPoint(self.table, self.log, truth, *indexed_labels(*keys[2:], truth))
        out.__dict__["_judge_keys"] = keys  # the same table: the same keys
        return out

    def judge(
        self, scores: np.ndarray, *, k: int = 10, ks: Sequence[int] | None = None
    ) -> RankingMetrics:
        """Per-learner metrics of the top k of `scores` over learners with truth (at every k
        of `ks` instead, when given)."""
        ks = (k,) if ks is None else tuple(int(x) for x in ks)
        group, course_order, learner, course = self._judge_keys
        score = np.asarray(scores, dtype=np.float64)
        if score.shape != group.shape:
            raise ValueError(
                f"scores: expected shape {group.shape}, one per candidate; got {score.shape}"
            )
        rows, rank = top_rows(group, course_order, score, max(ks))
        return indexed_list_metrics(learner[rows], course[rows], rank, self.truth, ks=ks)

    @cached_property
    def _judge_keys(self) -> tuple[np.ndarray, ...]:
        """(group, course order, learner index, course index), (n,) each, computed once: every
        variant is judged on the same table (mapping its ids and sorting its course ids took
        more time than ranking the scores)."""
        learner, course = row_indices(self.log, self.table, "LabelledPoint table")
        return (*ranking_keys(self.table), learner, course)


def label_draws(
    point: LabelledPoint, fraction: float, n: int, *, seed: int
) -> list[tuple[LabelledPoint, LabelledPoint]]:
    """n random divisions of the point's labels into (fit, judge) (`split_labels`): the
    first drawn with `seed` (what one `split_labels(fraction, seed)` gives), the i-th with
    (seed, i). The judging parts of different draws overlap: their figures are not
    independent, but their mean varies less than one draw's."""
    if n < 1:
        raise ValueError(f"n: the number of draws must be at least 1, got {n}")
    return [point.split_labels(fraction, seed=seed if i == 0 else (seed, i)) for i in range(n)]


@dataclass
class Variant:
    kind: str  # e.g. "personalized"
    name: str  # e.g. "zscore, learner_l2=30"
    blender: Any
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class VariantResult:
    variant: Variant
    fitted: Any  # fitted on the (first) fit point
    valid: dict[str, float]  # validation figures (the means over draws: compare_draws)
    per_user: RankingMetrics  # on the (first) judging point
    fit_seconds: float  # of one fit (the mean over draws)
    draws: list[dict[str, float]] = field(default_factory=list)  # each draw's figures


def compare(
    variants: Iterable[Variant], fit: LabelledPoint, judge: LabelledPoint, *, k: int = 10
) -> list[VariantResult]:
    """Fit every variant on `fit` (learners with labels), judge it on `judge`; best first
    by validation NDCG@k."""
    return compare_draws(variants, [(fit, judge)], k=k)


def compare_draws(
    variants: Iterable[Variant],
    draws: Sequence[tuple[LabelledPoint, LabelledPoint]],
    *,
    k: int = 10,
) -> list[VariantResult]:
    """`compare` on each (fit, judge) draw, e.g. several random divisions of one window's
    labels (`LabelledPoint.split_labels`): a variant's `valid` figures are their means over
    the draws (each draw's in `draws`), so a choice between variants whose figures differ by
    less than one division's noise is not left to that one division. Best first by the mean
    validation NDCG@k (ties: the order of `variants`); `fitted` and `per_user` are the first
    draw's."""
    variants = list(variants)
    if not draws:
        raise ValueError("draws: expected at least one (fit, judge) pair of points, got none")
    first = _fit_and_judge(variants, *draws[0], k)
    # later draws keep their figures only: their fitted blenders and per-learner metrics go
    later = [[(r.valid, r.fit_seconds) for r in _fit_and_judge(variants, fit, judge, k)]
             for fit, judge in draws[1:]]  # fmt: skip
    out = []
    for i, r in enumerate(first):
        figures = [r.valid, *(run[i][0] for run in later)]  # this variant on every draw
        mean = {key: float(np.mean([f[key] for f in figures])) for key in figures[0]}
        seconds = float(np.mean([r.fit_seconds, *(run[i][1] for run in later)]))
        out.append(VariantResult(r.variant, r.fitted, mean, r.per_user, seconds, figures))
    return sorted(out, key=lambda r: -r.valid[f"ndcg@{k}"])  # stable: ties keep their order


def _fit_and_judge(
    variants: list[Variant], fit: LabelledPoint, judge: LabelledPoint, k: int
) -> list[VariantResult]:
    """One result per variant, in the order of `variants`."""
    rows, _ = fit.fit_rows()
    train = fit.table.iloc[rows].reset_index(drop=True)
    y, w = fit.labels[rows], fit.sample_weight(rows)
    out = []
    for v in variants:
        start = time.perf_counter()
        b = clone(v.blender).fit(train, y, sample_weight=w)
        seconds = time.perf_counter() - start
        scores = b.score(judge.table)
        per_user = judge.judge(scores, k=k)
        summary = per_user.summary()
        valid = {
            f"ndcg@{k}": summary[f"ndcg@{k}"],
            f"recall@{k}": summary[f"recall@{k}"],
            "auc": candidate_auc(judge.table.assign(_s=scores), "_s", judge.labels),
        }
        out.append(VariantResult(v, b, valid, per_user, seconds, [valid]))
    return out


def best_by_kind(results: list[VariantResult]) -> dict[str, VariantResult]:
    """The first (best) result of each kind, in the order of `results`."""
    best: dict[str, VariantResult] = {}
    for r in results:
        best.setdefault(r.variant.kind, r)
    return best
