"""Why the blend does not lift the two-tower on MovieLens-100K: what the blender's fit point
sees, and whether closed-form features (EASE, item-kNN) would help it.

    python -m benchmarks.diagnose_blend_movielens --run /tmp/bench_blend_movielens/seed0

Reads the models of a finished `bench_blend_movielens --seed N` run (`model_before_refit`
fits the blender, `model` serves test) and rebuilds its candidates. Reports:

- labels at the fit point: the stratified split has no time order, so the candidates the
  blender is fitted on (validation part, before the refit) also hold the *test* part's
  positives, labelled 0 there; counted over all candidates and within the two-tower's top 10;
- the global logistic and personalized blenders refitted with extra per-learner z-scored
  features (EASE at L2 500, co-watch cosine item-kNN with k = 200, both on the fit point's
  inputs), with the L2s seed 0's study chose, judged on test: NDCG@10 against the
  two-tower alone on the same candidates.
  Test is looked at for every row, so this chooses nothing; it says whether such features are
  worth adding to the candidate builder.

Writes results/blend_movielens_diagnosis.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from baselines.ease import ease_weights
from benchmarks.bench_blend_movielens import ML100K
from benchmarks.common import print_table, write_result
from blend import LogisticBlender, PersonalizedBlender
from blend.candidates import seen_in
from blend.evaluate import window_truth
from blend.selection import LabelledPoint
from experiments.blend import Models, make_points
from experiments.data import prepare_data
from watchlog.cowatch import cowatch_similarity

BASE = ["ncf_z", "glmix_global", "glmix_per_learner", "glmix_per_course", "log_popularity",
        "course_age", "retrieval_rank"]  # fmt: skip


def z_by_learner(t, column: str):
    g = t.groupby("learner_id", sort=False)[column]
    return (t[column] - g.transform("mean")) / g.transform("std").replace(0.0, 1.0).fillna(1.0)


def with_closed_form(point: LabelledPoint, fold, ease_l2: float) -> LabelledPoint:
    """The point's table plus `ease_z` and `knn_z`, both from the fold's inputs only."""
    log = point.log
    X = seen_in(log, fold.inputs)  # (n_learners, n_courses) csr, 1 = watched before the cutoff
    li = log.learner_ids.to_index(point.table.learner_id)
    ci = log.course_ids.to_index(point.table.course_id)
    ease = np.asarray(X @ ease_weights(X, ease_l2))[li, ci]  # (n_candidates,)
    knn = np.asarray((X @ cowatch_similarity(X, "cosine", top_k=200).T).todense())[li, ci]
    t = point.table.assign(ease=ease, knn=knn)
    t = t.assign(ease_z=z_by_learner(t, "ease"), knn_z=z_by_learner(t, "knn"))
    return LabelledPoint.from_table(t, log, point.truth)


def main() -> None:
    from hydra import compose, initialize_config_dir

    from benchmarks.blend_harness import CONF

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="/tmp/bench_blend_movielens/seed0", type=Path)
    p.add_argument("--ease-l2", type=float, default=500.0)
    p.add_argument("--data-root", default=None, help="paths.data_root override")
    args = p.parse_args()
    torch.set_num_threads(1)
    overrides = [*ML100K, "blend.gain=binary", "blend.candidates.group_columns=[segment]"]
    if args.data_root:
        overrides.append(f"paths.data_root={args.data_root}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("pipeline", overrides=overrides)
    data = prepare_data(cfg.data, cfg.split)
    final = Models.load(args.run).serving()
    early = Models.load(args.run, "model_before_refit").serving()
    points = make_points(cfg.blend, data, final, early, seed=0)
    fit_point, test_point = points.refit_on, points.test
    log = data.log

    # Labels at the fit point, against the test part's positives on the same candidates.
    test_truth = window_truth(log, data.split.test, seen_in(log, data.split.test.inputs),
                              gain="binary")  # fmt: skip
    li = log.learner_ids.to_index(fit_point.table.learner_id)
    ci = log.course_ids.to_index(fit_point.table.course_id)
    test_pos = np.asarray(test_truth[li, ci]).ravel() > 0
    top10 = fit_point.table["ncf_rank"].to_numpy() <= 10
    labels = {
        "fit_candidates": int(len(fit_point.table)),
        "validation_positives": int(fit_point.labels.sum()),
        "test_positives_labelled_0": int(test_pos.sum()),
        "top10_validation_positives": int(fit_point.labels[top10].sum()),
        "top10_test_positives_labelled_0": int(test_pos[top10].sum()),
    }
    print_table([labels], "Fit point (validation part, models before the refit)")

    fit = with_closed_form(fit_point, data.split.valid, args.ease_l2)
    test = with_closed_form(test_point, data.split.test, args.ease_l2)
    rows_, _ = fit.fit_rows()
    train = fit.table.iloc[rows_].reset_index(drop=True)
    y, w = fit.labels[rows_], fit.sample_weight(rows_)
    rows = [
        {"system": "two-tower alone", "features": "ncf_score",
         "ndcg@10": test.judge(test.table["ncf_score"].to_numpy()).summary()["ndcg@10"]},
        {"system": "EASE alone (on the candidates)", "features": "ease",
         "ndcg@10": test.judge(test.table["ease"].to_numpy()).summary()["ndcg@10"]},
    ]  # fmt: skip
    sets = {"base": BASE, "base + ease_z": [*BASE, "ease_z"], "base + knn_z": [*BASE, "knn_z"],
            "base + ease_z + knn_z": [*BASE, "ease_z", "knn_z"],
            "ncf_z + ease_z": ["ncf_z", "ease_z"]}  # fmt: skip
    for name, features in sets.items():
        # the settings seed 0's study chose (logistic l2 0.1, personalized learner_l2 1000)
        for blender in (
            LogisticBlender(features, l2=0.1),
            PersonalizedBlender(features, learner_l2=1000.0, segment_l2=30.0),
        ):
            blender.fit(train, y, sample_weight=w)
            score = test.judge(blender.score(test.table)).summary()["ndcg@10"]
            rows.append({"system": type(blender).__name__, "features": name, "ndcg@10": score})
    print_table(rows, "Test NDCG@10 on the same candidates (looked at after the fact)")
    write_result("blend_movielens_diagnosis", rows, units={}, labels=labels, run=str(args.run),
                 ease_l2=args.ease_l2)  # fmt: skip


if __name__ == "__main__":
    main()
