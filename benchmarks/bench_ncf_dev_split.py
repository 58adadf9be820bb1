"""MovieLens-100K development split: how `conf/ncf/two_tower_ml100k`'s teacher was chosen.

    python -m benchmarks.bench_ncf_dev_split threads=1             # 3 settings x seeds 0-2
    python -m benchmarks.bench_ncf_dev_split threads=1 --seeds 0 --settings \
        "standardized T 0.7" "standardized T 2.5"   # neighbours: results/ncf_dev_split_more

The 10% validation part of the stratified split is too noisy (sd 0.0008 over seeds) to tell
teacher settings apart, so they were compared on a development split: 25% of each course's
*training* pairs as validation (`split.fn.valid_ratio=0.25`), no refit, test never read.
The figure is the mean validation NDCG@10 over the last 10 of 200 epochs (less noisy than the
best epoch), plus the best epoch and where patience 30 would have stopped. Beside them, on
the same split: EASE over an L2 grid, and why the teacher is standardized (the correlation
of history length with the raw teacher's top candidate score and spread).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import pandas as pd
import torch

from baselines import EASE, Window
from baselines.ease import ease_weights
from benchmarks.bench_ncf_movielens import _binary, compose_cfg
from benchmarks.common import print_table, write_result
from experiments.data import prepare_data
from experiments.train_ncf import fit

DEV = ("experiment=ml100k_stratified", "split.fn.valid_ratio=0.25")
TWO_TOWER = ("ncf=two_tower_ml100k", "ncf.refit=false", "ncf.patience=200")
SETTINGS = {  # what changes against conf/ncf/two_tower_ml100k
    "raw T 0.05 (the previous config)": (
        "ncf.module.distill_standardize=false", "ncf.module.distill_temperature=0.05",
    ),
    "standardized T 1.0": ("ncf.module.distill_temperature=1.0",),
    "standardized T 1.5 (two_tower_ml100k)": (),
    # the single-seed neighbours (`--seeds 0 --settings ...`)
    "standardized T 0.7": ("ncf.module.distill_temperature=0.7",),
    "standardized T 2.5": ("ncf.module.distill_temperature=2.5",),
    "standardized T 1.0, weight 0.7": (
        "ncf.module.distill_temperature=1.0", "ncf.module.distill_weight=0.7",
    ),
    "standardized T 1.0, weight 0.3": (
        "ncf.module.distill_temperature=1.0", "ncf.module.distill_weight=0.3",
    ),
}  # fmt: skip
DEFAULT_SETTINGS = list(SETTINGS)[:3]
EASE_GRID = (100.0, 200.0, 300.0, 500.0, 700.0, 1000.0, 1500.0, 2000.0)
LAST = 10  # epochs averaged at the end of training
PATIENCE = 30  # the early-stopping patience the previous config had


def validation_curve(metrics_csv: str, epochs_run: int) -> np.ndarray:
    """(epochs_run,) validation NDCG@10 of each training epoch, from the run's CSV log (its
    last validation row, at epoch == epochs_run, re-validates the reloaded best weights)."""
    log = pd.read_csv(metrics_csv).dropna(subset=["val_ndcg@10"])
    curve = log.loc[log["epoch"] < epochs_run, "val_ndcg@10"].to_numpy()
    if len(curve) != epochs_run:
        raise RuntimeError(f"{metrics_csv}: {len(curve)} validation rows for {epochs_run} epochs")
    return curve


def stop_epoch(curve: np.ndarray, patience: int) -> int:
    """The last epoch early stopping (max mode, strict improvement) would run on this curve."""
    best_so_far = np.maximum.accumulate(curve)
    new_best = np.flatnonzero(np.r_[True, best_so_far[1:] > best_so_far[:-1]])  # epochs
    gaps = np.diff(np.r_[new_best, len(curve) + patience])  # the last gap always exceeds it
    first = new_best[np.argmax(gaps > patience)]  # the best that no later epoch beat in time
    return min(int(first) + patience, len(curve) - 1)


def two_tower_row(out: Path, name: str, seed: int, overrides) -> dict[str, Any]:
    run_dir = out / re.sub(r"[^A-Za-z0-9.]+", "_", f"{name}_{seed}")  # Hydra-safe path
    cfg = compose_cfg(run_dir, *DEV, *TWO_TOWER,
                      f"seed={seed}", *SETTINGS[name], *overrides)  # fmt: skip
    res = fit(cfg).result
    curve = validation_curve(res.metrics_csv, res.epochs_run)
    stop = stop_epoch(curve, PATIENCE)
    return {
        "setting": name, "seed": seed, f"valid_ndcg@10_last{LAST}": float(curve[-LAST:].mean()),
        "best_valid_ndcg@10": float(curve.max()), "best_epoch": int(curve.argmax()),
        "epochs": len(curve), f"patience{PATIENCE}_stops_at": stop,
        f"patience{PATIENCE}_stops_before_best": stop < int(curve.argmax()),
    }  # fmt: skip


def ease_rows(out: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """EASE over the L2 grid on the development validation window; and, for the teacher
    (L2 500 on the same inputs), history length against its raw scores' scale."""
    cfg = compose_cfg(out / "ease", *DEV)
    data = prepare_data(cfg.data, cfg.split)
    x_in = _binary(data.log, data.split.valid.inputs)  # (n_learners, n_courses) training
    window = Window(x_in, _binary(data.log, data.split.valid.labels), exclude=x_in)
    rows = [{"model": "EASE", "l2": l2, "valid_ndcg@10": window.evaluate(EASE(l2=l2))["ndcg@10"]}
            for l2 in EASE_GRID]  # fmt: skip
    x = torch.from_numpy(x_in.toarray())
    scores = x @ torch.from_numpy(ease_weights(x_in, 500.0)).to(x.dtype)  # (n_learners, n_courses)
    scores[x > 0] = float("nan")  # input courses are not candidates
    length = x.sum(1).numpy()
    top = np.nanmax(scores.numpy(), axis=1)
    spread = np.nanstd(scores.numpy(), axis=1)
    has = length > 0
    scale = {
        "corr(history length, top candidate score)": float(np.corrcoef(length[has], top[has])[0, 1]),
        "corr(history length, sd of candidate scores)": float(
            np.corrcoef(length[has], spread[has])[0, 1]
        ),
    }  # fmt: skip
    return rows, scale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, choices=list(SETTINGS))
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. threads=1")
    p.add_argument("--out", default="/tmp/bench_ncf_dev_split")
    p.add_argument("--epochs", type=int, default=200)
    args = p.parse_args()
    out = Path(args.out)
    overrides = [f"trainer.max_epochs={args.epochs}", *args.overrides]

    ease, scale = ease_rows(out)
    print_table(ease, "EASE on the development validation (25% of training)")
    print(scale)
    runs = [two_tower_row(out, name, seed, overrides)
            for name in args.settings for seed in args.seeds]  # fmt: skip
    print_table(runs, f"Two-tower, development validation NDCG@10 (last {LAST} epochs)")
    key = f"valid_ndcg@10_last{LAST}"
    rows = [{"setting": name, key: mean(r[key] for r in runs if r["setting"] == name),
             "seeds": "/".join(f"{r[key]:.4f}" for r in runs if r["setting"] == name)}
            for name in args.settings]  # fmt: skip
    print_table(rows, "Mean over seeds")
    name = "ncf_dev_split" if args.settings == DEFAULT_SETTINGS else "ncf_dev_split_more"
    write_result(
        name, rows, units={key: "mean over seeds"},
        runs=runs, ease=ease, teacher_scale=scale,
    )  # fmt: skip


if __name__ == "__main__":
    main()
