"""Report sections of the two models: the two-tower (ncf/) and GLMix (glmix/)
(`experiments.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from experiments.report_blend import segment_table
from experiments.report_blocks import (
    Block,
    Image,
    Note,
    Table,
    missing,
    new_figure,
    png_figure,
    png_file,
    read_json,
    strip_prefix,
)

__all__ = ["glmix_blocks", "ncf_blocks"]

SYNTHETIC_SOURCE = "watchlog.synthetic.generate_platform"


# ---- ncf ----------------------------------------------------------------------------------------
def ncf_blocks(run_dir: Path) -> list[Block]:
    s: list[Block] = []
    path = run_dir / "ncf" / "metrics.json"
    if not path.is_file():
        s.append(missing("two-tower", path, run_dir))
        return s
    m = read_json(path)
    s.append(
        Table.from_mapping(
            {"model": m.get("model"),  # epochs counted from 1, as the training log counts them
             "best epoch": None if m.get("best_epoch") is None else m["best_epoch"] + 1,
             "epochs run": m.get("epochs_run"), "training (s)": (m.get("timings") or {}).get("total")},
            "Training",
        )
    )  # fmt: skip
    if m.get("members"):  # an ensemble (ncf.ensemble_size > 1): the metrics below are its own
        s.append(
            Table.from_records(
                [{"seed": e["seed"], "best epoch": e["best_epoch"] + 1,
                  "epochs run": e["epochs_run"],
                  "validation ndcg@10": (e.get("valid") or {}).get("val_ndcg@10"),
                  "test ndcg@10": (e.get("test") or {}).get("test_ndcg@10")}
                 for e in m["members"]],
                "Ensemble members, each fitted and its epoch chosen alone; the model serves the "
                "mean of their scores (the Training table's epochs are the first member's)",
            )
        )  # fmt: skip
    valid, test = (
        strip_prefix(m.get("valid") or {}, "val_"),
        strip_prefix(m.get("test") or {}, "test_"),
    )
    names = list(dict.fromkeys([*valid, *test]))
    s.append(
        Table(
            ["metric", "validation", "test"],
            [[n, valid.get(n), test.get(n)] for n in names],
            "Full-catalogue ranking (seen courses excluded); validation at the chosen epoch, "
            "test once after the refit. Bootstrap intervals: see the blend section's test table "
            "(two_tower row, on the blend's candidates).",
        )
    )
    if m.get("embedding_quality"):
        s.append(
            Table.from_records(
                [{"label": k, **v} for k, v in m["embedding_quality"].items()],
                "Embedding quality: share of a course's nearest neighbours with its label "
                "(agreement), against chance",
            )
        )
    where = (
        "on the blend's test candidates (the two-tower's own top list: the same learners as "
        "the blend table; the Evaluation section's per-segment figures rank the whole "
        "catalogue). The two-tower stage itself saves no per-segment figures."
    )
    s.append(segment_table(run_dir, systems=["two_tower"], where=where))
    plots = run_dir / "ncf" / "plots"
    curves = plots / "training_curves.png"
    if curves.is_file():
        s.append(Image(png_file(curves), "Training curves (loss and validation metrics)"))
    elif (run_dir / "ncf" / "logs" / "metrics.csv").is_file():
        s.append(_training_curves(run_dir / "ncf" / "logs" / "metrics.csv"))
    else:
        s.append(missing("training curves", curves, run_dir))
    maps = sorted(plots.glob("courses_*.png")) + sorted(plots.glob("learners_*.png"))
    if maps:
        for p in maps:
            side, method, label = p.stem.split("_", 2)
            s.append(Image(png_file(p), f"{side.capitalize()} by {label} ({method.upper()})"))
    else:
        s.append(
            Note("embedding maps: not run (no ncf/plots/*.png; outputs.plots=false?)", "missing")
        )
    for p in sorted(plots.glob("neighbours_*.png")):
        course = p.stem.removeprefix("neighbours_")
        s.append(Image(png_file(p), f"The 50 nearest neighbours of course {course}"))
        table = p.with_suffix(".csv")
        if table.is_file():
            top = pd.read_csv(table).head(11)
            keep = [c for c in ("rank", "id", "title", "cosine") if c in top.columns]
            s.append(Table.from_frame(top[keep], f"Course {course}'s nearest neighbours"))
    if not list(plots.glob("neighbours_*.png")):
        s.append(Note("nearest-neighbours figure: not run (no ncf/plots/neighbours_*.png)",
                             "missing"))  # fmt: skip
    if m.get("snapshots"):
        s.append(
            Table.from_records(
                [{"snapshot": k, **v} for k, v in m["snapshots"].items()],
                "Training snapshots (one per cutoff)",
            )
        )
    return s


def _training_curves(metrics_csv: Path) -> Image:
    """Lightning's metrics.csv plotted directly (runs without the plots output)."""
    raw = pd.read_csv(metrics_csv)
    metrics = [c for c in raw.columns if c not in ("epoch", "step") and not c.startswith("test_")]
    fig = new_figure(10, 3.5)
    loss_ax, val_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for c in metrics:
        d = raw[["step", c]].dropna()
        (loss_ax if "loss" in c else val_ax).plot(d["step"], d[c], marker="o", ms=3, label=c)
    for ax, title in ((loss_ax, "losses"), (val_ax, "validation")):
        ax.set_xlabel("step")
        ax.set_title(title)
        if ax.lines:
            ax.legend(fontsize=7)
    return Image(png_figure(fig), "Training curves (from ncf/logs/metrics.csv)")


# ---- glmix --------------------------------------------------------------------------------------
def glmix_blocks(run_dir: Path) -> list[Block]:
    s: list[Block] = []
    path = run_dir / "glmix" / "metrics.json"
    if not path.is_file():
        s.append(missing("GLMix", path, run_dir))
        return s
    m = read_json(path)
    best = m.get("best_update") or {}
    s.append(
        Table.from_mapping(
            {"design": m.get("model"), "training rows": m.get("train_rows"),
             "kept update": best.get("update"), "pass": best.get("pass"),
             "coordinate": best.get("coordinate"), "refit": m.get("refit")},
            "Training (the coordinate-descent update kept: the best on validation AUC with "
            "keep_best, else the last)",
        )
    )  # fmt: skip
    valid, test = m.get("valid") or {}, m.get("test") or {}
    names = [n for n in dict.fromkeys([*valid, *test]) if not isinstance(valid.get(n), dict)]
    s.append(
        Table(
            ["metric", "validation", "test"],
            [[n, valid.get(n), test.get(n)] for n in names],
            "Click prediction on the impressions of each window",
        )
    )
    unknown = {k: {"validation": valid.get(k), "test": test.get(k)} for k in ("n_unknown",)}
    if valid.get("n_unknown") or test.get("n_unknown"):
        s.append(
            Table(
                ["entities without coefficients", "validation rows", "test rows"],
                [[c, (unknown["n_unknown"]["validation"] or {}).get(c),
                  (unknown["n_unknown"]["test"] or {}).get(c)]
                 for c in dict.fromkeys([*(valid.get("n_unknown") or {}),
                                         *(test.get("n_unknown") or {})])],
            )
        )  # fmt: skip
    history = m.get("history") or []
    if history:
        s.append(_history_plot(history, best))
        s.append(
            Table.from_records(
                [{"update": i, **{k: v for k, v in h.items() if k != "solver"}}
                 for i, h in enumerate(history)],
                "Validation history: one row per coordinate update",
            )
        )  # fmt: skip
    if m.get("weights"):
        s.append(
            Table.from_records(
                [{"window": k, **v} for k, v in m["weights"].items()],
                "Watch-time sample weights",
            )
        )
    model_dir = run_dir / "glmix" / "model"
    if not (model_dir / "model.json").is_file():
        s.append(missing("coefficients", model_dir / "model.json", run_dir))
        return s
    from glmix.io import load_model

    model = load_model(model_dir)
    s.extend(_coefficient_tables(model))
    s.extend(_truth_comparison(run_dir, model))
    return s


def _history_plot(history: list[dict[str, Any]], best: dict[str, Any]) -> Image:
    frame = pd.DataFrame(history)
    x = np.arange(len(frame))
    labels = [f"{p}:{c}" for p, c in zip(frame["pass"], frame["coordinate"], strict=True)]
    fig = new_figure(10, 3.6)
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(x, frame["val_auc"], marker="o", label="validation AUC")
    if best.get("update") is not None:
        ax.axvline(best["update"], color="#999", ls=":", label="chosen")
    ax.set_title("validation AUC")
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    for c in ("train_log_loss", "val_log_loss"):
        if c in frame:
            ax2.plot(x, frame[c], marker="o", label=c)
    ax2.set_title("log loss")
    ax2.legend(fontsize=8)
    for a in (ax, ax2):
        a.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    return Image(png_figure(fig), "GLMix validation history (pass:coordinate per update)")


def _coefficient_tables(model, top: int = 12) -> list[Table]:
    """The fixed effect's largest coefficients; per random coordinate, the features whose
    coefficients vary most between entities."""
    out = []
    for name, est in model.coordinates_.items():
        names = np.asarray(est.feature_names_[: est.n_features_in_], dtype=object)
        coef = np.asarray(est.coef_, dtype=np.float64)
        if coef.ndim == 1:
            order = np.argsort(-np.abs(coef), kind="stable")[:top]
            out.append(
                Table(
                    ["feature", "coefficient"],
                    [[names[i], coef[i]] for i in order],
                    f"Coordinate {name} (fixed effect): the {top} largest coefficients",
                )
            )
        else:
            spread = coef.std(axis=0)
            order = np.argsort(-spread, kind="stable")[:top]
            out.append(
                Table(
                    ["feature", "mean", "std", "min", "max"],
                    [[names[i], coef[:, i].mean(), spread[i], coef[:, i].min(), coef[:, i].max()]
                     for i in order],
                    f"Coordinate {name} ({coef.shape[0]:,} entities): the {top} features whose "
                    "coefficients vary most between entities",
                )
            )  # fmt: skip
    return out


def _truth_comparison(run_dir: Path, model, n_examples: int = 10) -> list[Table | Image | Note]:
    """Per-learner topic (course category) coefficients beside the synthetic platform's true
    topic interests of the same learners (regenerated from the run's data config)."""
    cfg_path = run_dir / "resolved_config.yaml"
    if not cfg_path.is_file():
        return [missing("true interests", cfg_path, run_dir)]
    source = OmegaConf.to_container(OmegaConf.load(cfg_path).data.source, resolve=True)
    if source.get("_target_") != SYNTHETIC_SOURCE:
        return [Note("True topic interests: only on the synthetic platform; this run's data "
                     f"source is {source.get('_target_')}.")]  # fmt: skip
    est = model.coordinates_.get("per_learner")
    if est is None:
        return [Note("True topic interests: the model has no per_learner coordinate.")]
    from watchlog.synthetic import platform_truth

    ids, truth = platform_truth(**{k: v for k, v in source.items() if k != "_target_"})
    names = list(est.feature_names_[: est.n_features_in_])
    cols = [names.index(f"course.category={t}") if f"course.category={t}" in names else -1
            for t in truth.topics]  # fmt: skip
    have = [i for i, c in enumerate(cols) if c >= 0]
    if not have:
        return [Note("True topic interests: the per_learner coordinate has no course.category "
                     "features to compare.")]  # fmt: skip
    rows = pd.Index(ids).get_indexer(pd.Index(est.ids_.index))
    if (rows < 0).any():
        return [Note(f"True topic interests: {(rows < 0).sum():,} learners of the model are not "
                     "on the regenerated platform (data config changed?); comparison skipped.",
                     "error")]  # fmt: skip
    coef = np.asarray(est.coef_, dtype=np.float64)[:, [cols[i] for i in have]]  # (n, topics)
    interest = truth.learner_interest[rows][:, have].astype(np.float64)  # (n, topics)
    topics = np.asarray([truth.topics[i] for i in have], dtype=object)
    cc, ic = coef - coef.mean(1, keepdims=True), interest - interest.mean(1, keepdims=True)
    denom = np.sqrt((cc**2).sum(1) * (ic**2).sum(1))
    varied = denom > 0
    corr = np.divide((cc * ic).sum(1), denom, out=np.full(len(coef), np.nan), where=varied)
    top_hit = coef.argmax(1) == interest.argmax(1)
    summary = Table.from_mapping(
        {
            "learners with coefficients": len(coef),
            "learners whose topic coefficients vary": int(varied.sum()),
            "mean correlation (coefficients vs true interests, per learner)": float(
                np.nanmean(corr) if varied.any() else np.nan
            ),
            "top topic = true top interest (share of varied learners)": float(
                top_hit[varied].mean() if varied.any() else np.nan
            ),
            "chance of that": 1.0 / len(have),
        },
        "GLMix per-learner topic coefficients against the platform's true topic interests",
    )
    spread = coef.std(1)
    pick = np.argsort(-spread, kind="stable")[:n_examples]
    examples = []
    for i in pick:
        tc, ti = np.argsort(-coef[i])[:3], np.argsort(-interest[i])[:3]
        examples.append(
            {
                "learner": est.ids_.index[i],
                "top coefficients": ", ".join(f"{topics[j]} ({coef[i, j]:+.2f})" for j in tc),
                "true top interests": ", ".join(f"{topics[j]} ({interest[i, j]:.0%})" for j in ti),
                "correlation": corr[i],
            }
        )
    fig = new_figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(interest.ravel(), coef.ravel(), s=4, alpha=0.3)
    ax.set_xlabel("true interest share of the topic")
    ax.set_ylabel("per-learner coefficient of the topic")
    ax.set_title("every (learner, topic)")
    return [
        summary,
        Table.from_records(
            examples,
            f"The {len(pick)} learners whose topic coefficients vary most (the most evidence)",
        ),
        Image(png_figure(fig), "Per-learner topic coefficients against the true interests"),
    ]
