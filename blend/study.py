"""The blend study of one run: choose on validation, judge once on test, tune by replay.

    outcome = choose_blenders(variants, [(fit_point, valid_point)])   # kind -> best variant
    rows, per_user = judge_systems(test_point, {"two_tower": ..., "personalized": ...})
    replay = replay_study(fit_point, valid_point, features, curve)    # three optimizers
    t = tournament(per_user["two_tower"], per_user["personalized"])   # blend.evaluate
    curves = metric_curves(test_point, scores, ks=range(1, 51))      # NDCG / Recall at each k

Systems are judged on the same candidates of the same learners (every learner with a label
in the window), so their figures and paired comparisons are like for like: NDCG@10 and
Recall@10 of each system's top 10 (gain = watched seconds) and the mean per-learner AUC of
its scores over the candidates.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from blend.blenders import LinearBlender
from blend.evaluate import candidate_auc
from blend.replay import METHODS, OBJECTIVES, PositionCurve, ReplaySet, tune_weights
from blend.selection import LabelledPoint, Variant, VariantResult, best_by_kind, compare_draws
from evaluation import RankingMetrics

__all__ = ["Choice", "choose_blenders", "judge_systems", "metric_curves", "replay_study"]


@dataclass
class Choice:
    results: list[VariantResult]  # every variant, best first on validation
    best: dict[str, VariantResult]  # kind -> its best variant

    @property
    def n_draws(self) -> int:
        """How many (fit, validation) draws every variant was judged on."""
        return len(self.results[0].draws) if self.results else 0

    def margin(self, kind: str, k: int = 10) -> dict[str, Any] | None:
        """How far the chosen variant of `kind` leads the best variant of any other kind on
        validation NDCG@k: the runner-up, the mean difference (negative: it trails), and over
        the draws how many it leads on and the spread of the difference (paired: both were
        judged on the same labels of each draw). None when no other kind was tried."""
        rivals = [r for r in self.results if r.variant.kind != kind]  # best first
        if kind not in self.best or not rivals:
            return None
        mine, rival, key = self.best[kind], rivals[0], f"ndcg@{k}"
        diff = np.array([a[key] - b[key] for a, b in zip(mine.draws, rival.draws, strict=True)])
        return {
            "kind": kind,
            "runner_up": rival.variant.kind,
            "runner_up_variant": rival.variant.name,
            f"{key}_diff": float(diff.mean()),
            f"{key}_diff_sd": float(diff.std(ddof=1)) if len(diff) > 1 else None,
            "draws": len(diff),
            "draws_ahead": int((diff > 0).sum()),
        }

    def table(self) -> list[dict[str, Any]]:
        """One row per variant, best first: its validation figures (means over draws), and
        with several draws, how many and the standard deviation of each figure over them."""
        rows = []
        for r in self.results:
            row = {"kind": r.variant.kind, "variant": r.variant.name, **r.valid,
                   "fit_seconds": r.fit_seconds}  # fmt: skip
            if len(r.draws) > 1:
                row["draws"] = len(r.draws)
                row.update({f"{key}_sd": float(np.std([d[key] for d in r.draws], ddof=1))
                            for key in r.valid})  # fmt: skip
            rows.append(row)
        return rows


def choose_blenders(
    variants: Sequence[Variant],
    draws: Sequence[tuple[LabelledPoint, LabelledPoint]],
    *,
    k: int = 10,
) -> Choice:
    """Every variant fitted on each draw's fit point and judged on its validation point
    (one draw: a blend window and a later validation window; several: random divisions of
    one window's labels); the choice follows the mean validation NDCG@k."""
    results = compare_draws(variants, draws, k=k)
    return Choice(results, best_by_kind(results))


def judge_systems(
    point: LabelledPoint, scores: Mapping[str, np.ndarray], *, k: int = 10
) -> tuple[list[dict[str, Any]], dict[str, RankingMetrics]]:
    """One row per system (ndcg@k, recall@k, auc), and each system's per-learner metrics."""
    rows, per_user = [], {}
    for name, s in scores.items():
        res = point.judge(np.asarray(s, dtype=np.float64), k=k)
        summary = res.summary()
        rows.append(
            {
                "system": name,
                f"ndcg@{k}": summary[f"ndcg@{k}"],
                f"recall@{k}": summary[f"recall@{k}"],
                "auc": candidate_auc(point.table.assign(_s=s), "_s", point.labels),
                "learners": res.n_users,
            }
        )
        per_user[name] = res
    return rows, per_user


def metric_curves(
    point: LabelledPoint, scores: Mapping[str, np.ndarray], *, ks: Sequence[int]
) -> pd.DataFrame:
    """Mean NDCG@k and Recall@k of each system's ranking of the point's candidates, at every k
    of `ks`: columns system, k, ndcg, recall, learners (one row per system and k)."""
    ks = [int(k) for k in ks]
    frames = []
    for name, s in scores.items():
        res = point.judge(np.asarray(s, dtype=np.float64), ks=ks)
        summary = res.summary()
        frames.append(
            pd.DataFrame(
                {"system": name, "k": ks, "ndcg": [summary[f"ndcg@{k}"] for k in ks],
                 "recall": [summary[f"recall@{k}"] for k in ks], "learners": res.n_users}
            )
        )  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def replay_study(
    fit: LabelledPoint,
    valid: LabelledPoint,
    features: Sequence[str],
    curve: PositionCurve,
    *,
    init: Sequence[float] | None = None,
    methods: Sequence[str] = METHODS,
    objectives: Sequence[str] = OBJECTIVES,
    tau: float = 0.1,
    max_evaluations: int = 20_000,
    seed: int = 0,
    k: int = 10,
) -> dict[str, Any]:
    """Tune a linear blend's weights by replay on the fit window's engagements with each
    method and objective; report the objective reached on the fit window and on validation,
    the seconds, and validation NDCG@k of the tuned weights. The first feature's weight is
    fixed (scale invariance)."""
    rows, _ = fit.fit_rows()
    train = fit.table.iloc[rows].reset_index(drop=True)
    base = LinearBlender(dict.fromkeys(features, 0.0)).fit(train)
    w0 = np.zeros(len(features)) if init is None else np.asarray(init, dtype=np.float64)
    w0[0] = 1.0 if init is None else w0[0]
    sets = {
        "fit": ReplaySet.from_candidates(train, base._z(train), fit.labels[rows], features),
        "valid": ReplaySet.from_candidates(
            valid.table, base._z(valid.table), valid.labels, features
        ),
    }
    out: dict[str, Any] = {
        "features": list(features),
        "engagements": {k_: s.n_engagements for k_, s in sets.items()},
        "curve": {"a": curve.a, "b": curve.b, "source": curve.source,
                  "observed": {str(p): v for p, v in curve.observed.items()}},
        "runs": [],
    }  # fmt: skip
    for objective in objectives:
        start_value = sets["valid"].objective(w0, objective, curve)
        for method in methods:
            t = time.perf_counter()
            res = tune_weights(
                sets["fit"], w0, objective=objective, method=method, curve=curve,
                tau=tau, seed=seed, max_evaluations=max_evaluations,
            )  # fmt: skip
            w = np.array([res.weights[f] for f in features])
            v = sets["valid"].objective(w, objective, curve)
            scores = base.with_weights(w).score(valid.table)
            ndcg = valid.judge(scores, k=k).summary()[f"ndcg@{k}"]
            out["runs"].append(
                {
                    "objective": objective,
                    "method": method,
                    "fit_objective": res.objective,
                    "valid_objective": v if objective == "mean_rank" else -v,
                    "valid_objective_at_init": (
                        start_value if objective == "mean_rank" else -start_value
                    ),
                    f"valid_ndcg@{k}": ndcg,
                    "seconds": res.seconds,
                    "evaluations": res.evaluations,
                    "weights": res.weights,
                    "wall_seconds": time.perf_counter() - t,
                }
            )
    for objective in objectives:  # time ratio of each check against the gradient method
        runs = {r["method"]: r for r in out["runs"] if r["objective"] == objective}
        if "gradient" in runs:
            g = max(runs["gradient"]["seconds"], 1e-9)
            for r in runs.values():
                r["time_vs_gradient"] = r["seconds"] / g
    return out
