"""More closed-form features for the MovieLens-100K rank blender: would they help, and can
validation tell?

    python -m benchmarks.diagnose_blend_features --runs /tmp/bbm/seed0 /tmp/bbm/seed1 /tmp/bbm/seed2
    python -m benchmarks.diagnose_blend_features --dev --runs /tmp/dev/seed0 /tmp/dev/seed1 ...

`--runs`: finished `bench_blend_movielens --seed N` runs. For each, the candidates of its fit
point (the validation part, the models before their refit) and of test are rebuilt, and the
rank blender (mean rank, temperature 0.1, `ncf_z` first: what validation chose on every seed
of the runs without the feature, but for the log-softmax on two) is fitted with the
benchmark's features (`base`) and with each set of extra ones, all computed from the point's
own inputs (what the learners had watched before it):

- `+ learner-learner EASE (L2 l)`: `blend.LearnerLearner`, EASE on the transposed watch
  matrix (learners as items), exact: a course scores by what the learners most like this one
  watched, z-scored over each learner's candidates (the item-item feature `ease_z` is the
  other direction);
- `+ history-length interactions`: `ncf_z` and `ease_z` times the learner's standardized
  log history length, so the weights of the two may change with it (per-learner constants
  cancel in a rank loss; products with them do not).

Validation (what the pipeline could choose on): the fit point's labels divided in halves four
times (`LabelledPoint.split_labels`, seeds 0-3), each half fitting and the other judging:
eight NDCG@10 figures per set, and their differences from `base` on the same halves (mean,
sd, how many of the eight are above 0). The halves of different draws overlap, so the eight
are not independent. Test (`--runs` only; after the fact, so it chooses nothing): fitted on
all of the fit point's labels, judged on test, as the benchmark.

`--dev`: runs of the development split instead (`split.fn.valid_ratio=0.25`, models not
refitted: the README's command), validation only; test is never built. Writes
results/blend_features_diagnosis.json (`--dev`: results/blend_features_dev.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from benchmarks.bench_blend_movielens import ML100K
from benchmarks.blend_harness import CONF
from benchmarks.common import print_table, write_result
from benchmarks.diagnose_blend_movielens import z_by_learner
from blend import LearnerLearner, RankBlender
from blend.candidates import seen_in
from blend.selection import LabelledPoint
from experiments.blend import Models, labelled_point
from experiments.data import prepare_data

TAU = 0.1
LEARNER_L2 = (30.0, 100.0, 300.0)
DRAWS = 4  # label halvings; each half fits once and judges once
DEV = "split.fn.valid_ratio=0.25"
EXACT_RANK = 1024  # >= the 943 learners: the low-rank Gram is exact, as in the benchmark


def with_extra(point: LabelledPoint, fold) -> LabelledPoint:
    """The point plus `uu<l2>_z` (learner-learner EASE per L2) and the history interactions,
    all from the fold's inputs."""
    log, t = point.log, point.table
    x = seen_in(log, fold.inputs)  # (n_learners, n_courses) 1 = watched before the cutoff
    li = log.learner_ids.to_index(t["learner_id"])
    ci = log.course_ids.to_index(t["course_id"])
    # the pipeline's scorer (blend=learner_learner), exact: rank >= min(learners, courses)
    cols = {f"uu{l2:g}": LearnerLearner(l2=l2, rank=EXACT_RANK).fit(x).score_pairs(x, li, ci)
            for l2 in LEARNER_L2}  # fmt: skip
    hist = np.log1p(np.asarray(x.sum(axis=1)).ravel()[li])  # (n_candidates,)
    hist = (hist - hist.mean()) / hist.std()
    t = t.assign(**cols, ncf_x_history=t["ncf_z"] * hist, ease_x_history=t["ease_z"] * hist)
    t = t.assign(**{f"{c}_z": z_by_learner(t, c) for c in cols})
    return LabelledPoint.from_table(t, log, point.truth)


def feature_sets(base: list[str]) -> dict[str, list[str]]:
    sets = {"base": base}
    for l2 in LEARNER_L2:
        sets[f"+ learner-learner EASE (L2 {l2:g})"] = [*base, f"uu{l2:g}_z"]
    sets["+ history-length interactions"] = [*base, "ncf_x_history", "ease_x_history"]
    return sets


def fitted(point: LabelledPoint, features: list[str]) -> RankBlender:
    rows, _ = point.fit_rows()
    train = point.table.iloc[rows].reset_index(drop=True)
    return RankBlender(features, tau=TAU).fit(
        train, point.labels[rows], sample_weight=point.sample_weight(rows)
    )


def ndcg(point: LabelledPoint, blender: RankBlender) -> float:
    return float(point.judge(blender.score(point.table)).summary()["ndcg@10"])


def run_rows(cfg, data, run: Path, dev: bool) -> list[dict]:
    builder = instantiate(cfg.blend.candidates, _convert_="all")
    log, split = data.log, data.split
    early = Models.load_early(run).serving()
    whole = with_extra(
        labelled_point(builder, log, split.valid, early, cfg.blend.gain), split.valid
    )
    halves = []
    for draw in range(DRAWS):
        a, b = whole.split_labels(0.5, seed=draw)
        halves += [(a, b), (b, a)]
    test = None
    if not dev:
        final = Models.load(run).serving()
        test = labelled_point(builder, log, split.test, final, cfg.blend.gain)
        test = with_extra(test, split.test)
    sets = feature_sets(["ncf_z", *cfg.blend.features])
    valid = {name: np.array([ndcg(j, fitted(f, feats)) for f, j in halves])
             for name, feats in sets.items()}  # fmt: skip
    rows = []
    for name, feats in sets.items():
        diff = valid[name] - valid["base"]
        rows.append({
            "run": run.name,
            "features": name,
            "valid ndcg@10 (8 halves)": round(float(valid[name].mean()), 4),
            "valid diff vs base": round(float(diff.mean()), 4),
            "diff sd": round(float(diff.std(ddof=1)), 4),
            "halves above base": int((diff > 0).sum()),
            "test ndcg@10": "-" if test is None else round(ndcg(test, fitted(whole, feats)), 4),
        })  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders")
    p.add_argument("--dev", action="store_true", help="development-split runs: validation only")
    p.add_argument("--data-root", default=None, help="paths.data_root override")
    args = p.parse_args()
    torch.set_num_threads(1)
    overrides = [*ML100K, "blend.gain=binary", "blend.candidates.group_columns=[segment]",
                 "blend.candidates.item_item.rank=1024", *([DEV] if args.dev else [])]  # fmt: skip
    if args.data_root:
        overrides.append(f"paths.data_root={args.data_root}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("pipeline", overrides=overrides)
    data = prepare_data(cfg.data, cfg.split)
    rows = [row for run in args.runs for row in run_rows(cfg, data, run, args.dev)]
    name = "blend_features_dev" if args.dev else "blend_features_diagnosis"
    print_table(rows, f"{name}: rank blender (tau {TAU}) with extra features")
    write_result(name, rows, units={}, runs=[str(r) for r in args.runs], tau=TAU,
                 learner_l2=list(LEARNER_L2), draws=DRAWS, overrides=overrides)  # fmt: skip


if __name__ == "__main__":
    main()
