"""A whole blend run: fit on the blend window, choose on validation, judge once on test.

    points = Points(fit=..., valid=..., test=...)          # scored, labelled candidates
    report = run_study(points, variants, serve="personalized", features=..., curve=curve)
    report.serving                                          # the fitted blender that serves
    report.summary()                                        # JSON-able figures

Where the points come from (the experiment wires models to folds):

    split with a blend window   fit   = blend window, models trained before it
    (train -> blend -> valid     valid = validation window, the same models served with the
     -> test)                            inputs up to its cutoff (NCFRecommender.at)
                                 test  = test window, the final models
    split without one           fit   = the validation part with the models chosen before the
    (random / stratified)               refit, its labels divided at random: blenders fit on
                                        one part, settings judged on the other (`valid`); with
                                        `more_draws`, further such divisions, and settings are
                                        chosen on the mean over all; then the chosen ones are
                                        refitted on all of it
                                 test  = the test part, the refitted models; blender kept

Nothing is chosen on test. On test every system ranks the same candidates of the same
learners: the two-tower alone (its own top list), GLMix alone, each blender kind's choice,
and optionally an oracle; the serving kind's lists also go through the fallback chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from blend.blenders import LinearBlender
from blend.evaluate import candidate_auc, list_metrics, tournament
from blend.features import NCF_NORMALIZATIONS
from blend.lists import routes, served_lists
from blend.replay import PositionCurve
from blend.selection import LabelledPoint, Variant, VariantResult
from blend.study import Choice, choose_blenders, judge_systems, metric_curves, replay_study
from evaluation import PairedComparison, RankingMetrics
from watchlog.candidates import LEARNER

__all__ = ["Points", "StudyReport", "run_study", "learner_routes"]


@dataclass
class Points:
    fit: LabelledPoint  # blenders are fitted on it
    valid: LabelledPoint  # settings are chosen on it
    test: LabelledPoint  # judged once
    refit_on: LabelledPoint | None = None  # without a blend window: refit the choice on it
    # without a blend window: further (fit, valid) divisions of refit_on's labels
    # (blend.selection.label_draws); validation figures are the means over every draw
    more_draws: Sequence[tuple[LabelledPoint, LabelledPoint]] = ()

    def __post_init__(self) -> None:
        if self.more_draws and self.refit_on is None:
            raise ValueError(
                "more_draws: further divisions of one window's labels need refit_on (that "
                "window), where the chosen blenders are refitted"
            )

    @property
    def draws(self) -> list[tuple[LabelledPoint, LabelledPoint]]:
        """Every (fit, valid) pair the settings are judged on; the first is (fit, valid)."""
        return [(self.fit, self.valid), *self.more_draws]


@dataclass
class StudyReport:
    choice: Choice
    fitted: dict[str, Any]  # kind -> the blender used on test
    serving: Any  # the serving kind's fitted blender
    serve_kind: str
    test_rows: list[dict[str, Any]]
    tournaments: dict[str, PairedComparison]
    served: dict[str, Any]  # metrics and source counts of the served lists on test
    replay: dict[str, Any] | None
    fit_counts: dict[str, int] = field(default_factory=dict)
    per_user: dict[str, RankingMetrics] = field(default_factory=dict)  # system -> test metrics
    curves: pd.DataFrame | None = None  # test NDCG / Recall of every system at each k
    serve_margin: dict[str, Any] | None = None  # the serving kind's lead on validation

    def per_learner_frame(self, log) -> pd.DataFrame:
        """One row per (system, judged learner): learner_id and the per-learner test metrics
        (for paired comparisons and per-segment breakdowns)."""
        frames = []
        for system, res in self.per_user.items():
            frame = res.to_frame()
            frames.append(
                frame.assign(system=system, learner_id=log.learner_ids.to_ids(frame["user"]))
            )
        return pd.concat(frames, ignore_index=True).drop(columns="user")

    def summary(self) -> dict[str, Any]:
        best = self.choice.best
        return {
            "serve": self.serve_kind,
            "fit": self.fit_counts,
            "chosen": {
                k: {"variant": r.variant.name, "settings": r.variant.settings, **r.valid}
                for k, r in best.items()
            },
            "coefficients": {
                k: b.coefficients() for k, b in self.fitted.items() if hasattr(b, "coefficients")
            },
            "validation": self.choice.table(),
            "validation_draws": self.choice.n_draws,
            "serve_margin": self.serve_margin,
            "test": self.test_rows,
            "tournaments": {k: vars(v) for k, v in self.tournaments.items()},
            "served": self.served,
            "replay": self.replay,
        }


def learner_routes(table: pd.DataFrame) -> pd.Series:
    """learner_id -> route of the fallback chain, from the per-learner columns the
    candidate builder adds (has_history, known_to_glmix)."""
    first = table.drop_duplicates(LEARNER)
    r = routes(
        first[LEARNER],
        has_history=first["has_history"].to_numpy(bool),
        known_to_glmix=first["known_to_glmix"].to_numpy(bool),
    )
    return pd.Series(r, index=pd.Index(first[LEARNER]))


def _refit(result: VariantResult, point: LabelledPoint) -> Any:
    rows, _ = point.fit_rows()
    train = point.table.iloc[rows].reset_index(drop=True)
    return clone(result.variant.blender).fit(
        train, point.labels[rows], sample_weight=point.sample_weight(rows)
    )


def run_study(
    points: Points,
    variants: Sequence[Variant],
    *,
    serve: str,
    replay_features: Sequence[str] | None = None,
    curve: PositionCurve | None = None,
    replay: Mapping[str, Any] | None = None,
    oracle: np.ndarray | None = None,
    k: int = 10,
    n_boot: int = 10_000,
    seed: int = 0,
    curve_k: int | None = None,
) -> StudyReport:
    """See the module docstring. serve: the kind whose blender serves the lists, or "best"
    (the kind of the best variant on validation). replay_features: the linear blend tuned by
    replay (first feature's weight fixed; "ncf" stands for the two-tower column of the
    normalization validation chose for the fixed-weight blend, which replay is compared
    with); replay: keywords of `replay_study` (methods, objectives, tau);
    oracle: (n_test_candidates,) scores of the truth, judged as a ceiling; curve_k: also
    every system's test NDCG@k / Recall@k for k = 1..curve_k (`StudyReport.curves`).
    With several draws (`Points.more_draws`) the settings, the serving kind and the better
    single model follow the means over the draws; replay tunes on the first (fit, valid)."""
    choice = choose_blenders(variants, points.draws, k=k)
    if serve == "best":  # the kind of the variant best on validation (results: best first)
        serve = choice.results[0].variant.kind
    if serve not in choice.best:
        raise ValueError(f"serve: no {serve!r} blender among the variants ({sorted(choice.best)})")
    fitted = {
        kind: (_refit(r, points.refit_on) if points.refit_on is not None else r.fitted)
        for kind, r in choice.best.items()
    }
    test = points.test
    scores: dict[str, np.ndarray] = {"two_tower": test.table["ncf_score"].to_numpy()}
    if "glmix_logit" in test.table.columns:
        scores["glmix"] = test.table["glmix_logit"].to_numpy()
    for kind, b in fitted.items():
        scores[kind] = b.score(test.table)
    if oracle is not None:
        scores["oracle"] = np.asarray(oracle, dtype=np.float64)
    rows, per_user = judge_systems(test, scores, k=k)
    curves = metric_curves(test, scores, ks=range(1, curve_k + 1)) if curve_k else None

    # The served lists: the serving blender, through the fallback chain.
    table = test.table.assign(blend_score=scores[serve])
    lists = served_lists(table, "blend_score", k, route=learner_routes(table))
    served_res = list_metrics(lists, test.log, test.truth, ks=(k,))
    served_summary = served_res.summary()
    per_user["served"] = served_res
    rows.append(
        {"system": f"served ({serve} + fallback chain)", f"ndcg@{k}": served_summary[f"ndcg@{k}"],
         f"recall@{k}": served_summary[f"recall@{k}"], "auc": float("nan"),
         "learners": served_res.n_users}
    )  # fmt: skip
    sources = lists.loc[lists["rank"] == 1, "source"].value_counts()  # a list's first source
    served = {
        f"ndcg@{k}": served_summary[f"ndcg@{k}"],
        f"recall@{k}": served_summary[f"recall@{k}"],
        "learners_by_first_source": {str(s): int(n) for s, n in sources.items()},
        "rows_by_source": {str(s): int(n) for s, n in lists["source"].value_counts().items()},
    }

    singles = [s for s in ("two_tower", "glmix") if s in per_user]
    better = max(singles, key=lambda s: _valid_ndcg(points, s, k))
    duels = {f"{serve} vs {s}": (s, serve) for s in singles}
    duels[f"{serve} vs better single model on validation ({better})"] = (better, serve)
    if "logistic" in per_user and serve != "logistic":
        duels[f"{serve} vs logistic"] = ("logistic", serve)
    duels[f"served vs {serve} (fallback chain)"] = (serve, "served")
    tournaments = {
        name: tournament(per_user[a], per_user[b], f"ndcg@{k}", n_boot=n_boot, seed=seed)
        for name, (a, b) in duels.items()
    }
    rep = None
    if replay_features and replay is not None and curve is not None:
        features = [_chosen_ncf(choice) if f == "ncf" else f for f in replay_features]
        rep = replay_study(points.fit, points.valid, features, curve, seed=seed, k=k, **replay)
        # Current weights (the fixed-weight blend) against the weights replay proposes.
        tuned = _replay_blender(points.fit, rep)
        if tuned is not None and "fixed" in per_user:
            res = test.judge(tuned.score(test.table), k=k)
            per_user["replay-tuned"] = res
            summary = res.summary()
            rows.append(
                {"system": "replay-tuned (gradient, mean rank)", f"ndcg@{k}": summary[f"ndcg@{k}"],
                 f"recall@{k}": summary[f"recall@{k}"],
                 "auc": candidate_auc(test.table.assign(_s=tuned.score(test.table)), "_s",
                                      test.labels),
                 "learners": res.n_users}
            )  # fmt: skip
            tournaments["replay-tuned vs fixed weights"] = tournament(
                per_user["fixed"], res, f"ndcg@{k}", n_boot=n_boot, seed=seed
            )
    return StudyReport(
        choice, fitted, fitted[serve], serve, rows, tournaments, served, rep,
        points.fit.fit_rows()[1], per_user, curves, choice.margin(serve, k),
    )  # fmt: skip


def _chosen_ncf(choice: Choice) -> str:
    """The two-tower column (`ncf_z` | `ncf_log_softmax`) of the normalization validation
    chose for the fixed-weight blend (the replay's "current weights"); without a fixed-weight
    variant, that of the best variant that has one."""
    ranked = [choice.best["fixed"]] if "fixed" in choice.best else choice.results
    norm = next((r.variant.settings["normalization"] for r in ranked
                 if "normalization" in r.variant.settings), "zscore")  # fmt: skip
    return NCF_NORMALIZATIONS[norm]


def _replay_blender(fit: LabelledPoint, rep: Mapping[str, Any]) -> LinearBlender | None:
    """The linear blend with the weights the gradient method found for the mean rank (the
    standardization of the fit window's rows, as `replay_study` used)."""
    run = next(
        (r for r in rep["runs"] if r["method"] == "gradient" and r["objective"] == "mean_rank"),
        None,
    )
    if run is None:
        return None
    rows, _ = fit.fit_rows()
    return LinearBlender(run["weights"]).fit(fit.table.iloc[rows].reset_index(drop=True))


def _valid_ndcg(points: Points, system: str, k: int) -> float:
    """A single model's validation NDCG@k (to name the better single model without test),
    the mean over the draws as the blenders'."""
    column = {"two_tower": "ncf_score", "glmix": "glmix_logit"}[system]
    return float(np.mean([
        valid.judge(valid.table[column].to_numpy(np.float64), k=k).summary()[f"ndcg@{k}"]
        for _, valid in points.draws
    ]))  # fmt: skip
