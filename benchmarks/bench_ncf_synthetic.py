"""The synthetic platform, temporal split: the two-tower against baselines, embedding quality,
and what training costs.

    python -m benchmarks.bench_ncf_synthetic               # the default platform (10k learners)
    python -m benchmarks.bench_ncf_synthetic --data synthetic_small
    python -m benchmarks.bench_ncf_synthetic --name ncf_synthetic_ensemble2 --models two_tower \
        ncf.ensemble_size=2                                  # a variant, in its own files

Split: the temporal default (validation = 45 days before the last 45; test = the last 45).
The two-tower trains on 4 rolling cutoffs before the validation cutoff; its epoch is chosen on
validation. Baselines (EASE, item-kNN on co-watch cosine, popularity) are fitted on exactly
the two-tower's inputs at each cutoff (the lookback window's watches), tuned on validation
and scored on test with the same exclusion (every course watched before the cutoff) and the
same truth. Embedding quality: k-NN (k = 10, cosine) agreement of course embeddings on
language and category against chance. Cost: wall time of training batches and of validation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from baselines import Window, baseline_rows
from benchmarks.bench_ncf_movielens import compose_cfg
from benchmarks.common import peak_rss_gib, print_table, write_result
from experiments.train_ncf import embedding_quality, fit

METRICS = ("ndcg@10", "recall@10", "precision@10", "map@10")


def _window(snap) -> Window:
    inputs = (snap.history > 0).astype("float32").tocsr()
    return Window(inputs, snap.labels, exclude=snap.seen)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.max_epochs=3")
    p.add_argument("--out", default="/tmp/bench_ncf_synthetic")
    p.add_argument(
        "--name",
        default="ncf_synthetic",
        help="results/<name>.json for seed 0, <name>_seed<N>.json for the others",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=["two_tower", "mf"],
        choices=["two_tower", "mf"],
        help="the trained models (baselines always run)",
    )
    args = p.parse_args()
    if "two_tower" not in args.models:  # its snapshots are the baselines' windows
        p.error("--models must include two_tower")
    torch.set_num_threads(2)
    out = Path(args.out)

    rows, detail = [], {}
    for ncf in args.models:
        cfg = compose_cfg(
            out / ncf, f"data={args.data}", f"ncf={ncf}", f"seed={args.seed}", *args.overrides
        )
        start = time.perf_counter()
        trained = fit(cfg)
        res = trained.result
        quality = embedding_quality(trained.recommender, trained.data.log)
        chosen = f"epoch {res.best_epoch}"
        if "teacher_l2" in res.extra:  # the teacher's L2, chosen on validation too
            chosen += f", teacher L2 {res.extra['teacher_l2']:g}"
        rows.append(
            {"model": ncf, "chosen": chosen, "valid_ndcg@10": res.valid["val_ndcg@10"],
             **{m: res.test[f"test_{m}"] for m in METRICS}, "seconds": time.perf_counter() - start}
        )  # fmt: skip
        detail[ncf] = {
            "timings": res.timings,
            "embedding_quality": quality,
            "epochs_run": res.epochs_run,
            "extra": res.extra,  # the teacher's L2 and its grid; test before the refit
        }
        if ncf == "two_tower":
            dm = trained.datamodule
            windows = (_window(dm.valid), _window(dm.test))
    rows += baseline_rows(*windows, METRICS)
    print_table(rows, f"Synthetic platform ({args.data}), temporal split, test")

    tt = detail["two_tower"]
    t = tt["timings"]
    cost = [
        {"what": "training batches", "seconds": t["train_batches"]},
        {"what": "validation (all epochs)", "seconds": t["validation"]},
        {"what": "refit (chosen epochs, validation window added)", "seconds": t["refit"]},
        {"what": "test", "seconds": t["test"]},
        {"what": "evaluation / training (ratio)", "seconds": t["evaluation_share_of_training"]},
        {"what": "seconds per epoch", "seconds": t["seconds_per_epoch"]},
        {"what": "learners per second", "seconds": t["train_learners_per_s"]},
        {"what": "whole fit (incl. Lightning overhead)", "seconds": t["fit"]},
    ]
    print_table(cost, "Two-tower training cost")
    quality = [
        {"label": k, **{m: v[m] for m in ("agreement", "chance", "lift")}}
        for k, v in tt["embedding_quality"].items()
    ]
    print_table(quality, "Course embeddings: k-NN (k=10) label agreement")
    # One file per seed (seed 0 keeps the plain name), so seeds can run side by side.
    write_result(
        args.name if args.seed == 0 else f"{args.name}_seed{args.seed}", rows,
        units={"seconds": "s"}, cost=cost, embedding_quality=quality, detail=detail,
        peak_rss_gib=peak_rss_gib(),
    )  # fmt: skip


if __name__ == "__main__":
    main()
