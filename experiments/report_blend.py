"""Report section of the blend stage (blend/) and the per-segment table (`experiments.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from experiments.report_blocks import (
    Block,
    Image,
    Note,
    Table,
    missing,
    new_figure,
    png_figure,
    read_json,
)
from experiments.summary import Intervals, system_intervals

__all__ = ["blend_blocks", "segment_table"]


# ---- blend --------------------------------------------------------------------------------------
def blend_blocks(run_dir: Path) -> list[Block]:
    s: list[Block] = []
    path = run_dir / "blend" / "metrics.json"
    if not path.is_file():
        s.append(missing("blend", path, run_dir))
        return s
    m = read_json(path)
    per_learner = run_dir / "blend" / "test_per_learner.parquet"
    test = [dict(r) for r in m.get("test") or []]
    if per_learner.is_file():
        frame = pd.read_parquet(per_learner)
        intervals = Intervals.of_run(run_dir)  # the run's evaluate.n_boot, evaluate.ci, seed
        _add_intervals(test, frame, intervals)
        caption = ("Test: every system on the same candidates of the same learners; "
                   f"{intervals.describe()}")  # fmt: skip
    else:
        caption = "Test: every system on the same candidates (no per-learner file: no intervals)"
    s.append(Table.from_records(test, caption))
    s.append(segment_table(run_dir))
    curves = run_dir / "blend" / "test_curves.parquet"
    if curves.is_file():
        s.append(_curves_plot(pd.read_parquet(curves), _list_k(run_dir)))
    else:
        s.append(
            Note(
                "Metric-vs-K curves: not run (no blend/test_curves.parquet: runs made before the "
                "blend stage saved them, or blend.curve_k=0; rerun `python -m experiments.blend "
                "run_dir=...`)",
                "missing",
            )
        )
    if m.get("tournaments"):
        s.append(
            Table.from_records(
                [{"duel": k, **v} for k, v in m["tournaments"].items()],
                f"Tournaments: paired bootstrap over learners of test NDCG@{m.get('k', 10)} (A vs "
                "B: mean_diff = A - B, win_rate = share of resamples where A wins)",
            )
        )
    if m.get("chosen"):
        s.append(
            Table.from_records(
                [{"kind": k, **{c: v for c, v in r.items() if c != "settings"}}
                 for k, r in m["chosen"].items()],
                f"Chosen variant of each kind on validation (serving: {m.get('serve')}"
                f"{_lead(m.get('serve_margin'))})",
            )
        )  # fmt: skip
    coefs = m.get("coefficients") or {}
    if coefs:
        features = list(dict.fromkeys(f for c in coefs.values() for f in c))
        s.append(
            Table(
                ["feature", *coefs],
                [[f, *(coefs[k].get(f) for k in coefs)] for f in features],
                "Blend weights of each chosen blender (personalized: its global part)",
            )
        )
    if m.get("validation"):
        draws = int(m.get("validation_draws") or 1)
        caption = "Every variant on validation" + (
            f" (means over {draws} random divisions of its labels; _sd: their spread)"
            if draws > 1 else ""
        )  # fmt: skip
        s.append(Table.from_records(m["validation"], caption))
    served = m.get("served") or {}
    if served:
        s.append(
            Table.from_mapping(
                {k: v for k, v in served.items() if not isinstance(v, dict)}
                | {f"first source: {k}": v
                   for k, v in (served.get("learners_by_first_source") or {}).items()},
                "Served lists on test (the serving blender through the fallback chain)",
            )
        )  # fmt: skip
    runs = (m.get("replay") or {}).get("runs") or []
    if runs:
        s.append(
            Table.from_records(
                [{k: v for k, v in r.items() if k != "weights"} for r in runs],
                "Replay tuning of the linear blend's weights",
            )
        )
    if m.get("features_absent"):
        s.append(Note(f"Features not available in this run: {m['features_absent']}"))
    return s


def _add_intervals(test: list[dict[str, Any]], frame: pd.DataFrame, intervals: Intervals) -> None:
    """low / high of ndcg@10 per test row, from the per-learner file (its system names are the
    table's without the parenthesis, e.g. 'served (personalized + fallback chain)' -> 'served')."""
    metric = next((c for c in frame.columns if c.startswith("ndcg@")), None)
    if metric is None:
        return
    bands = system_intervals(frame, metric, intervals)
    for row in test:
        name = row["system"]
        ci = bands.get(name, bands.get(name.split(" (")[0]))
        if ci is not None:
            row[f"{metric} low"], row[f"{metric} high"] = ci.low, ci.high


def segment_table(
    run_dir: Path, systems: list[str] | None = None, where: str | None = None
) -> Table | Note:
    """Mean test NDCG@k (the served length; and learners) per learner segment and system;
    `where` goes into the caption after the metric (what the figures are measured on)."""
    per_learner = run_dir / "blend" / "test_per_learner.parquet"
    learners = run_dir / "eventlog" / "learners.parquet"
    for p in (per_learner, learners):
        if not p.is_file():
            return missing("per-segment test figures", p, run_dir)
    frame = pd.read_parquet(per_learner)
    if systems is not None:
        frame = frame[frame["system"].isin(systems)]
    segments = pd.read_parquet(learners, columns=["learner_id", "segment"])
    frame = frame.merge(segments, on="learner_id", how="left")
    metric = next(c for c in frame.columns if c.startswith("ndcg@"))
    frame["segment"] = frame["segment"].astype("object").fillna("(unknown)")
    means = frame.pivot_table(index="segment", columns="system", values=metric, aggfunc="mean",
                              sort=True)  # fmt: skip
    means = means[list(dict.fromkeys(frame["system"]))]
    counts = frame.drop_duplicates("learner_id").groupby("segment").size()
    out = means.reset_index()
    out.insert(1, "learners", counts.reindex(means.index).to_numpy())
    return Table(
        [str(c) for c in out.columns],
        out.to_numpy(object).tolist(),
        f"Test {metric} per learner segment"
        + (f", {where}" if where else " (mean over the segment's judged learners)"),
    )


def _list_k(run_dir: Path) -> int | None:
    cfg = run_dir / "resolved_config.yaml"
    if not cfg.is_file():
        return None
    return OmegaConf.load(cfg).get("blend", {}).get("k")


def _curves_plot(curves: pd.DataFrame, k: int | None) -> Image:
    fig = new_figure(11, 4)
    for i, metric in enumerate(("ndcg", "recall")):
        ax = fig.add_subplot(1, 2, i + 1)
        for system, g in curves.groupby("system", sort=False):
            style = ":" if str(system).startswith("oracle") else "-"
            ax.plot(g["k"], g[metric], ls=style, label=system)
        if k:
            ax.axvline(k, color="#999", lw=0.8, ls="--")
        ax.set_xlabel("K (list length)")
        ax.set_title(f"test {'NDCG' if metric == 'ndcg' else 'Recall'}@K")
        ax.legend(fontsize=7)
    return Image(
        png_figure(fig),
        "Metric vs K on test (each system ranking the same candidates; dashed: the served K)",
    )


def _lead(margin: dict[str, Any] | None) -> str:
    """'; +0.0040 on validation NDCG@10 against personalized, ahead on 8 of 8 draws'."""
    if not margin:
        return ""
    key, diff = next((k, v) for k, v in margin.items() if k.endswith("_diff"))
    metric = key.removesuffix("_diff").upper()
    return (f"; {diff:+.4f} on validation {metric} against {margin['runner_up']}, ahead on "
            f"{margin['draws_ahead']} of {margin['draws']} draws")  # fmt: skip
