"""What the blend benchmarks share: one pipeline run per seed, its figures, the summary over
seeds.

Each seed is a whole `experiments.pipeline` run (models, blend models, blend study; no export)
in one process, so every system of a seed is judged on the same candidates of the same
learners; its `blend/metrics.json` and `blend/test_per_learner.parquet` are the raw figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from benchmarks.common import RESULTS, print_table, write_result
from experiments.pipeline import run as run_pipeline

CONF = Path(__file__).resolve().parents[1] / "conf"
# The pipeline as the benchmarks run it: models trained to early stopping, no plots, no export.
COMMON = (
    "ncf=two_tower",  # the calibrated two-tower (the main job defaults to two_tower_b256)
    "reuse=false",  # a benchmark recomputes every stage, whatever its folder holds
    "trainer.enable_progress_bar=false",
    "outputs.plots=false",
    "outputs.embeddings=false",
    "stages.export=false",
    "save_data=false",
    "threads=1",
)


def command_line(name: str, doc: str) -> tuple[Path, int, list[str], str] | None:
    """`--seed N [--name NAME] [overrides]` -> (this seed's output folder, seed, overrides,
    results name), with torch on one thread; `--summarize SEED ...` writes the summary over
    seeds and returns None. `--name` keeps a variant's results (runs with extra overrides)
    apart from the benchmark's own files."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summarize", type=int, nargs="+", metavar="SEED")
    p.add_argument("--out", default=f"/tmp/bench_{name}")
    p.add_argument("--name", default=name, help=f"results/<name>_seed<N>.json (default {name})")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.max_epochs=3")
    args = p.parse_args()
    if args.summarize:
        summarize(args.name, args.summarize)
        return None
    torch.set_num_threads(1)
    return Path(args.out) / f"seed{args.seed}", args.seed, args.overrides, args.name


def run_seed(out: Path, seed: int, overrides: list[str]) -> dict[str, Any]:
    """One pipeline run; returns its blend metrics, per-learner test metrics and timings."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "pipeline",
            overrides=[*COMMON, f"seed={seed}", f"paths.output_dir={out}", *overrides],
        )
    start = time.perf_counter()
    manifest = run_pipeline(cfg)
    seconds = time.perf_counter() - start
    blend = json.loads((out / "blend" / "metrics.json").read_text())
    per_learner = pd.read_parquet(out / "blend" / "test_per_learner.parquet")
    return {
        "seed": seed,
        "blend": blend,
        "per_learner": per_learner,
        "ncf": manifest.get("ncf"),
        "glmix": manifest.get("glmix"),
        "seconds": seconds,
    }


def gap_closed(rows: dict[str, dict[str, float]], system: str, best_single: str, ceiling: str):
    """Share of the gap from the better single model to the ceiling that `system` closes."""
    if ceiling not in rows:
        return None
    b, s, c = (rows[n]["ndcg@10"] for n in (best_single, system, ceiling))
    return (s - b) / (c - b) if c != b else None


def seed_result(name: str, res: dict[str, Any], extra_rows=(), extra: dict | None = None):
    """Print and write one seed's tables: systems, tournaments, chosen variants, replay."""
    blend = res["blend"]
    rows = [*blend["test"], *extra_rows]
    print_table(rows, f"{name}, seed {res['seed']}: test, every system on the same candidates")
    duels = [{"duel": k, **{m: v[m] for m in ("mean_diff", "low", "high", "win_rate", "n")}}
             for k, v in blend["tournaments"].items()]  # fmt: skip
    print_table(duels, "Tournaments (paired bootstrap over learners, test NDCG@10)")
    chosen = [{"kind": k, "variant": v["variant"], "valid_ndcg@10": v["ndcg@10"]}
              for k, v in blend["chosen"].items()]  # fmt: skip
    print_table(chosen, "Chosen on validation")
    if blend.get("serve_margin"):
        print_table([blend["serve_margin"]], "The serving kind against the best other kind")
    replay = None
    if blend.get("replay"):
        replay = [{k: r[k] for k in ("objective", "method", "fit_objective", "valid_objective",
                                     "valid_ndcg@10", "seconds", "evaluations", "time_vs_gradient")}
                  for r in blend["replay"]["runs"]]  # fmt: skip
        print_table(replay, "Replay tuning on the blend window (valid = validation window)")
    return write_result(
        f"{name}_seed{res['seed']}", rows, units={"seconds": "s"},
        tournaments=blend["tournaments"], chosen=blend["chosen"], validation=blend["validation"],
        validation_draws=blend.get("validation_draws"), serve_margin=blend.get("serve_margin"),
        replay=blend.get("replay"), served=blend["served"], fit=blend["fit"],
        coefficients=blend["coefficients"], pipeline_seconds=res["seconds"],
        blend_timings=blend["timings"], ncf=res["ncf"], glmix=res["glmix"], **(extra or {}),
    )  # fmt: skip


def summarize(name: str, seeds: list[int], serve: str = "personalized") -> None:
    """The table over seeds from the per-seed result files (mean +- sd, each seed's duel)."""
    per_seed = {s: json.loads((RESULTS / f"{name}_seed{s}.json").read_text()) for s in seeds}
    # The served lists' row names the kind that served ("served (rank + fallback chain)"),
    # which `blend.serve=best` may choose differently per seed: one row for all of them.
    key = lambda system: "served lists" if system.startswith("served (") else system  # noqa: E731
    systems = [key(r["system"]) for r in per_seed[seeds[0]]["rows"]]
    rows = []
    for system in systems:
        vals = {m: [next(r[m] for r in p["rows"] if key(r["system"]) == system) for p in
                    per_seed.values()] for m in ("ndcg@10", "recall@10", "auc")}  # fmt: skip
        row: dict[str, Any] = {"system": system}
        if system == "served lists":
            row["served kind per seed"] = " / ".join(
                next(r["system"] for r in p["rows"] if key(r["system"]) == system)
                .removeprefix("served (")
                .split(" +")[0]
                for p in per_seed.values()
            )
        for m, v in vals.items():
            v = [x for x in v if x is not None]  # AUC is not defined for served lists
            row[m] = mean(v) if v else None
            row[f"{m}_sd"] = stdev(v) if len(v) > 1 else None
        row["ndcg@10 per seed"] = " / ".join(f"{x:.4f}" for x in vals["ndcg@10"])
        rows.append(row)
    print_table(rows, f"{name}: mean over seeds {seeds}")
    duels = []
    for s, p in per_seed.items():
        for duel, t in p["tournaments"].items():
            duels.append({"seed": s, "duel": duel, "mean_diff": t["mean_diff"], "low": t["low"],
                          "high": t["high"], "win_rate": t["win_rate"]})  # fmt: skip
    print_table(duels, "Tournaments per seed")
    replay = [{"seed": s, "objective": r["objective"], "method": r["method"],
               "fit_objective": r["fit_objective"], "valid_objective": r["valid_objective"],
               "seconds": r["seconds"], "time_vs_gradient": r["time_vs_gradient"]}
              for s, p in per_seed.items() for r in (p.get("replay") or {}).get("runs", [])]  # fmt: skip
    if replay:
        print_table(replay, "Replay tuning per seed")
    gaps = {s: p["gap_closed"] for s, p in per_seed.items() if "gap_closed" in p}
    write_result(
        name, rows, units={}, seeds=seeds, tournaments=duels, replay=replay, gap_closed=gaps,
        source_files=[f"{name}_seed{s}.json" for s in seeds],
        code_versions={s: p["code_version"] for s, p in per_seed.items()},
    )  # fmt: skip
