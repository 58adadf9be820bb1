"""MovieLens-100K: the two-tower against our baselines, on identical splits, in one run.

    python -m benchmarks.bench_ncf_movielens                 # 3 seeds, both protocols
    python -m benchmarks.bench_ncf_movielens --seeds 0 --quick

Full ranking (the recommenders benchmark setup): 75/25 split stratified per user (seed 42),
validation = 10% of each user's training items; every hyperparameter and the epoch are
chosen on validation; test inputs are the whole training part; seen items are removed;
all items ranked. Models: the two-tower (`conf/ncf/<--ncf>`), ID-only MF through the same
training code (`conf/ncf/mf`), EASE (closed form, L2 chosen on validation), item-kNN on
co-watch cosine (k chosen on validation) and popularity. Trained models run once per seed
(seeds 0, 1, 2: mean +- sd); the closed-form ones are deterministic.
MAP@10 here divides by min(#relevant, 10) (recommenders' `map_at_k`).

Sampled (the NCF paper's protocol): each user's latest item is the test label (the one
before it validation), 99 negatives the user never rated, HR@10 and NDCG@10.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from benchmarks.common import print_table, write_result
from benchmarks.ncf_harness import Window, baseline_rows
from evaluation import evaluate_sampled
from experiments.data import prepare_data
from experiments.train_ncf import fit

CONF = Path(__file__).resolve().parents[1] / "conf"
KS = (10,)
METRICS = ("ndcg@10", "precision@10", "recall@10", "map@10")


def compose_cfg(out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train_ncf",
            overrides=[
                f"paths.output_dir={out}", "outputs.plots=false", "outputs.model=false",
                "outputs.embeddings=false", "trainer.enable_progress_bar=false", *overrides,
            ],
        )  # fmt: skip


def _binary(log, events):
    m = log.interactions(events[events["watched"].to_numpy()])
    m.data[:] = 1.0
    return m


def closed_form_baselines(cfg) -> list[dict[str, Any]]:
    """EASE, item-kNN, popularity on the stratified split: chosen on validation, refitted on
    all training pairs for test."""
    data = prepare_data(cfg.data, cfg.split)
    log, split = data.log, data.split
    windows = {}
    for name, fold in (("valid", split.valid), ("test", split.test)):
        x_in = _binary(log, fold.inputs)
        windows[name] = Window(x_in, _binary(log, fold.labels), exclude=x_in)
    return baseline_rows(windows["valid"], windows["test"], METRICS)


def trained_model(out: Path, seeds, ncf: str, protocol: str, overrides=()) -> tuple[dict, list]:
    """The model of `conf/ncf/<ncf>` for each seed; returns (summary row, per-seed rows)."""
    per_seed = []
    for seed in seeds:
        if protocol == "full":
            cfg = compose_cfg(
                out / f"{ncf}_{seed}", "experiment=ml100k_stratified", f"ncf={ncf}",
                f"seed={seed}", *overrides,
            )  # fmt: skip
        else:
            cfg = compose_cfg(
                out / f"{ncf}_sampled_{seed}", "data=ml100k", "split=leave_latest",
                f"ncf={ncf}", f"seed={seed}", *overrides,
            )  # fmt: skip
        start = time.perf_counter()
        trained = fit(cfg)
        res = trained.result
        row = {
            "seed": seed,
            "best_epoch": res.best_epoch,
            "valid_ndcg@10": res.valid["val_ndcg@10"],
        }
        if protocol == "full":
            row.update({m: res.test[f"test_{m}"] for m in METRICS})
        else:
            row.update(sampled_metrics(trained, seed))
        row["seconds"] = time.perf_counter() - start
        row["seconds_per_epoch"] = res.timings["seconds_per_epoch"]
        per_seed.append(row)
    keys = METRICS if protocol == "full" else ("hr@10", "ndcg@10")
    summary = {"model": ncf, "seeds": len(per_seed)}
    for k in keys:
        vals = [r[k] for r in per_seed]
        summary[k] = mean(vals)
        summary[f"{k}_sd"] = stdev(vals) if len(vals) > 1 else 0.0
    summary["best_epochs"] = "/".join(str(r["best_epoch"]) for r in per_seed)
    return summary, per_seed


def sampled_metrics(trained, seed: int) -> dict[str, float]:
    """HR@10 / NDCG@10 of each user's held-out latest item against 99 unrated items."""
    rec, test = trained.recommender, trained.datamodule.test
    truth = test.labels.tocoo()
    users, positives = truth.row.astype(np.int64), truth.col.astype(np.int64)
    rated = ((test.seen + test.labels) > 0).astype(np.float32)  # never a negative
    learner_emb = rec.learner_embeddings(np.arange(rec.model.n_learners))
    course_emb = rec.course_embeddings()

    def score_pairs(u: np.ndarray, items: np.ndarray) -> torch.Tensor:
        lu = learner_emb[torch.from_numpy(u)]  # (c, d)
        ci = course_emb[torch.from_numpy(items)]  # (c, 1 + N, d)
        return torch.einsum("cd,cnd->cn", lu, ci)

    res = evaluate_sampled(score_pairs, users, positives, rated, ks=KS, n_negatives=99, seed=seed)
    s = res.summary()
    return {"hr@10": s["hr@10"], "ndcg@10": s["ndcg@10"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="none: skip it")
    p.add_argument("--ncf", default="two_tower_ml100k", help="conf/ncf config of the two-tower")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.max_epochs=3")
    p.add_argument("--out", default="/tmp/bench_ncf_movielens")
    p.add_argument("--sampled-seeds", type=int, nargs="*", default=[0], help="none: skip it")
    args = p.parse_args()
    out = Path(args.out)
    torch.set_num_threads(2)

    rows, per_seed = [], {}
    if args.seeds:
        rows = closed_form_baselines(compose_cfg(out / "baselines", "experiment=ml100k_stratified"))
        for ncf in (args.ncf, "mf"):
            summary, per_seed[ncf] = trained_model(out, args.seeds, ncf, "full", args.overrides)
            rows.insert(0 if ncf == args.ncf else 1, summary)
        print_table(rows, "MovieLens-100K, full ranking, stratified 75/25 (seed 42), test")

    sampled = []
    if args.sampled_seeds:
        for ncf in (args.ncf, "mf"):
            summary, per_seed[f"{ncf}_sampled"] = trained_model(
                out, args.sampled_seeds, ncf, "sampled", args.overrides
            )
            sampled.append(summary)
        print_table(sampled, "MovieLens-100K, NCF sampled protocol (latest item, 99 negatives)")
    write_result(
        "ncf_movielens" if args.seeds else "ncf_movielens_sampled",
        rows,
        units={
            "seconds": "s",
            "ndcg@10": "mean over seeds",
            "map@10": "min(#relevant, k) denominator",
        },
        sampled=sampled,
        per_seed=per_seed,
        published={"NCF": 0.3686, "BPR": 0.445, "BiVAE": 0.469},
    )


if __name__ == "__main__":
    main()
