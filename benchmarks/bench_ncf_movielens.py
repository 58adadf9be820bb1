"""MovieLens-100K: the two-tower against our baselines, on identical splits, in one run.

    python -m benchmarks.bench_ncf_movielens                 # 3 seeds, both protocols
    python -m benchmarks.bench_ncf_movielens --seeds 0 --quick

Full ranking (the recommenders benchmark setup): the 75/25 split of recommenders'
MovieLens notebook, `python_stratified_split(ratio=0.75, filter_by="item", seed=42)`,
reproduced pair for pair (`experiment=ml100k_stratified`: stratified per course, 24,934 test
ratings); validation = the same split again on the training part (10%); every hyperparameter and the epoch are
chosen on validation; test inputs are the whole training part; seen items are removed;
all items ranked. Models: the two-tower (`conf/ncf/<--ncf>`), ID-only MF through the same
training code (`conf/ncf/mf`), EASE (closed form, L2 chosen on validation), item-kNN on
co-watch cosine (k chosen on validation) and popularity. Trained models run once per seed
(seeds 0, 1, 2: mean +- sd); the closed-form ones are deterministic.
MAP@10 here divides by min(#relevant, 10) (recommenders' `map_at_k`). Paired comparisons:
per-user test NDCG@10 of the two-tower (its mean over seeds, and each seed) against each
other model on the same users, with a paired bootstrap interval of the difference (users
resampled jointly, `evaluation.paired_bootstrap`).

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

from baselines import Window, baseline_rows
from benchmarks.common import print_table, write_result
from evaluation import RankingMetrics, evaluate_sampled, paired_bootstrap
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


def closed_form_baselines(cfg, per_user: dict[str, RankingMetrics]) -> list[dict[str, Any]]:
    """EASE, item-kNN, popularity on the stratified split: chosen on validation, refitted on
    all training pairs for test (per-user test metrics into `per_user`, by model name)."""
    data = prepare_data(cfg.data, cfg.split)
    log, split = data.log, data.split
    windows = {}
    for name, fold in (("valid", split.valid), ("test", split.test)):
        x_in = _binary(log, fold.inputs)
        windows[name] = Window(x_in, _binary(log, fold.labels), exclude=x_in)
    return baseline_rows(windows["valid"], windows["test"], METRICS, per_user)


def trained_model(
    out: Path, seeds, ncf: str, protocol: str, overrides=(), per_user: list | None = None
) -> tuple[dict, list]:
    """The model of `conf/ncf/<ncf>` for each seed; returns (summary row, per-seed rows).
    per_user (full protocol): each seed's per-user test metrics are appended to it."""
    per_seed = []
    for seed in seeds:
        if protocol == "full":
            cfg = compose_cfg(
                out / f"{ncf}_{seed}", "experiment=ml100k_stratified", f"ncf={ncf}",
                f"seed={seed}", *overrides,
            )  # fmt: skip
        else:
            cfg = compose_cfg(
                out / f"{ncf}_sampled_{seed}", "data=ml100k", "split=leave_latest", "split.fn.ties=order",
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
            if per_user is not None:
                per_user.append(res.test_per_user)
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


def _seed_mean(seeds: list[RankingMetrics]) -> RankingMetrics:
    """One RankingMetrics whose per-user NDCG@10 is the mean over the seeds."""
    ndcg = np.mean([s.per_user["ndcg@10"] for s in seeds], axis=0)
    return RankingMetrics(per_user={"ndcg@10": ndcg}, users=seeds[0].users)


def paired_rows(
    name: str, seeds: list[RankingMetrics], others: dict[str, RankingMetrics]
) -> list[dict[str, Any]]:
    """Per-user NDCG@10 of `name` (mean over its seeds, then each seed) minus each other
    model's, on the same users: mean difference, 95% paired-bootstrap interval, user wins."""
    users = seeds[0].users
    a_mean = _seed_mean(seeds).per_user["ndcg@10"]  # (n_users,)
    rows = []
    for other, res in others.items():
        if not np.array_equal(res.users, users) or any(
            not np.array_equal(s.users, users) for s in seeds
        ):
            raise RuntimeError(f"{name} and {other} were evaluated on different users")
        pairs = [(f"mean of {len(seeds)} seeds", a_mean)]
        pairs += [(f"seed {i}", s.per_user["ndcg@10"]) for i, s in enumerate(seeds)]
        for label, a in pairs:
            c = paired_bootstrap(a, res.per_user["ndcg@10"], n_boot=10_000, seed=0)
            rows.append({
                "model": name, "runs": label, "against": other, "ndcg@10": c.mean_a,
                "other_ndcg@10": c.mean_b, "difference": c.mean_diff, "ci95_low": c.low,
                "ci95_high": c.high, "share_of_replicates_ahead": c.win_rate,
                "users_ahead": c.user_win, "users_behind": c.user_loss, "users": c.n,
            })  # fmt: skip
    return rows


def sampled_metrics(trained, seed: int) -> dict[str, float]:
    """HR@10 / NDCG@10 of each user's held-out latest item against 99 unrated items."""
    rec, test = trained.recommender, trained.datamodule.test
    truth = test.labels.tocoo()
    users, positives = truth.row.astype(np.int64), truth.col.astype(np.int64)
    rated = ((test.seen + test.labels) > 0).astype(np.float32)  # never a negative
    learner_emb = rec.learner_embeddings_at(np.arange(len(rec.learner_ids)))
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

    rows, per_seed, paired = [], {}, []
    if args.seeds:
        per_user: dict[str, Any] = {}
        rows = closed_form_baselines(
            compose_cfg(out / "baselines", "experiment=ml100k_stratified"), per_user
        )
        for ncf in (args.ncf, "mf"):
            per_user[ncf] = []
            summary, per_seed[ncf] = trained_model(
                out, args.seeds, ncf, "full", args.overrides, per_user[ncf]
            )
            rows.insert(0 if ncf == args.ncf else 1, summary)
        print_table(
            rows,
            "MovieLens-100K, full ranking, recommenders' stratified 75/25 split (seed 42), test",
        )
        others = {k: v for k, v in per_user.items() if k not in (args.ncf, "mf")}
        others["mf (mean of seeds)"] = _seed_mean(per_user["mf"])
        paired = paired_rows(args.ncf, per_user[args.ncf], others)
        print_table(paired, "Paired comparison: per-user test NDCG@10, 10,000 bootstrap replicates")

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
        paired=paired,
        published={"NCF": 0.3686, "BPR": 0.445, "BiVAE": 0.469},
    )


if __name__ == "__main__":
    main()
