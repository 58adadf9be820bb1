"""Would a second two-tower lift the MovieLens-100K blend? A diagnosis on finished runs.

    python -m benchmarks.diagnose_blend_ensemble --runs /tmp/bbm/seed0 /tmp/bbm/seed1 /tmp/bbm/seed2

`bench_blend_movielens --seed N` trains its models on the same split for every N (the split's
draw is fixed; N seeds the models), so the runs of two seeds hold two two-towers of the same
data. For each run A, paired with the next run B (the last with the first), this rebuilds A's
candidates (its fit point before the refit, and test), scores them with B's two-tower as well
(B's model before its refit at the fit point, its final model on test: the same snapshots as
A's), z-scores B's score over each learner's candidates, and fits the rank blender (mean-rank
objective, temperature 0.1, A's features) three ways:

- base: A's features, `ncf_z` first (what the benchmark's validation chose on every seed);
- + second two-tower: base plus B's z-score as one more feature;
- average of the two: the mean of the two z-scores in place of `ncf_z`.

Judged on test: NDCG@10 with binary gain, seen items removed, as the benchmark. Test is looked
at for every row, so this chooses nothing; it says whether an ensemble of two-towers is worth
building into the pipeline (today it trains one). Writes
results/blend_movielens_ensemble_diagnosis.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from benchmarks.bench_blend_movielens import ML100K
from benchmarks.blend_harness import CONF
from benchmarks.common import print_table, write_result
from benchmarks.diagnose_blend_movielens import z_by_learner
from blend import RankBlender
from blend.selection import LabelledPoint
from experiments.blend import Models, make_points
from experiments.data import prepare_data
from ncf.recommender import NCFRecommender


def with_second(point: LabelledPoint, second: NCFRecommender) -> LabelledPoint:
    """The point's table plus `ncf2_z` (the second two-tower's score, z-scored per learner)
    and `ncf_avg_z` (the mean of the two z-scores)."""
    t = point.table
    t = t.assign(ncf2=second.score(t["learner_id"].tolist(), t["course_id"].tolist()))
    t = t.assign(ncf2_z=z_by_learner(t, "ncf2"))
    t = t.assign(ncf_avg_z=(t["ncf_z"] + t["ncf2_z"]) / 2)
    return LabelledPoint.from_table(t, point.log, point.truth)


def pair_rows(cfg, data, run_a: Path, run_b: Path) -> list[dict]:
    final = Models.load(run_a).serving()
    early = Models.load_early(run_a).serving()
    points = make_points(cfg.blend, data, final, early, seed=0)
    fit = with_second(points.refit_on, Models.load_early(run_b).serving().ncf)
    test = with_second(points.test, Models.load(run_b).serving().ncf)
    context = list(cfg.blend.features)  # the features beside the two-tower's (conf/blend)
    rows_, _ = fit.fit_rows()
    train = fit.table.iloc[rows_].reset_index(drop=True)
    y, w = fit.labels[rows_], fit.sample_weight(rows_)

    def ndcg(scores) -> float:
        return round(float(test.judge(scores).summary()["ndcg@10"]), 4)

    row = {"run": run_a.name, "second_run": run_b.name}
    for column, name in (("ncf_z", "two-tower"), ("ncf2_z", "second two-tower"),
                         ("ncf_avg_z", "average of the two")):  # fmt: skip
        row[f"{name} alone"] = ndcg(test.table[column])
    for name, features in (
        ("blend: base", ["ncf_z", *context]),
        ("blend: + second two-tower", ["ncf_z", *context, "ncf2_z"]),
        ("blend: average of the two", ["ncf_avg_z", *context]),
    ):
        blender = RankBlender(features, tau=0.1).fit(train, y, sample_weight=w)
        row[name] = ndcg(blender.score(test.table))
    return [row]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True,
                   help="bench_blend_movielens run folders (seed0 seed1 ...), two or more")  # fmt: skip
    p.add_argument("--data-root", default=None, help="paths.data_root override")
    args = p.parse_args()
    if len(args.runs) < 2:
        p.error("--runs: two or more run folders (each is paired with the next)")
    torch.set_num_threads(1)
    overrides = [*ML100K, "blend.gain=binary", "blend.candidates.group_columns=[segment]",
                 "blend.candidates.item_item.rank=1024"]  # fmt: skip
    if args.data_root:
        overrides.append(f"paths.data_root={args.data_root}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("pipeline", overrides=overrides)
    data = prepare_data(cfg.data, cfg.split)
    rows = []
    for i, run_a in enumerate(args.runs):
        rows += pair_rows(cfg, data, run_a, args.runs[(i + 1) % len(args.runs)])
    print_table(rows, "Test NDCG@10 on the same candidates (looked at after the fact)")
    write_result("blend_movielens_ensemble_diagnosis", rows, units={},
                 runs=[str(r) for r in args.runs])  # fmt: skip


if __name__ == "__main__":
    main()
