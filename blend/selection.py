"""Fit blenders on one window, judge them on a later one, keep the best settings.

    fit_pt = LabelledPoint.from_table(table_blend, log, truth_blend)   # the blend window
    val_pt = LabelledPoint.from_table(table_valid, log, truth_valid)   # the validation window
    results = compare(variants, fit_pt, val_pt)     # every variant fitted, then judged
    best = best_by_kind(results)                    # kind -> the variant best on validation

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

from blend.evaluate import candidate_auc, candidate_labels, indexed_list_metrics, row_indices
from blend.lists import ranking_keys, top_rows
from evaluation import RankingMetrics
from glmix import watch_time_weights
from watchlog import EventLog
from watchlog.candidates import learner_bounds, validate_candidates

__all__ = ["LabelledPoint", "Variant", "VariantResult", "compare", "best_by_kind"]


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

    def split_labels(self, fraction: float, seed: int = 0) -> tuple[LabelledPoint, LabelledPoint]:
        """(fit, judge): the same candidates with the window's labelled pairs divided at
        random, `fraction` of them to judge on. For splits without a later window to choose
        settings on (random / stratified): fit on one part, judge on the other."""
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
        """The same (already checked) candidates labelled by another truth."""
        return LabelledPoint(
            self.table, self.log, truth, *candidate_labels(self.table, self.log, truth)
        )

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


@dataclass
class Variant:
    kind: str  # e.g. "personalized"
    name: str  # e.g. "zscore, learner_l2=30"
    blender: Any
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class VariantResult:
    variant: Variant
    fitted: Any
    valid: dict[str, float]
    per_user: RankingMetrics
    fit_seconds: float


def compare(
    variants: Iterable[Variant], fit: LabelledPoint, judge: LabelledPoint, *, k: int = 10
) -> list[VariantResult]:
    """Fit every variant on `fit` (learners with labels), judge it on `judge`; best first
    by validation NDCG@k."""
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
        out.append(VariantResult(v, b, valid, per_user, seconds))
    return sorted(out, key=lambda r: -r.valid[f"ndcg@{k}"])


def best_by_kind(results: list[VariantResult]) -> dict[str, VariantResult]:
    """The first (best) result of each kind, in the order of `results`."""
    best: dict[str, VariantResult] = {}
    for r in results:
        best.setdefault(r.variant.kind, r)
    return best
