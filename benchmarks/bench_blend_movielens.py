"""The blend on MovieLens-100K: the stratified split of bench_ncf_movielens, one seed per run.

    python -m benchmarks.bench_blend_movielens --seed 0          # results/blend_movielens_seed0.json
    python -m benchmarks.bench_blend_movielens --summarize 0 1 2 # results/blend_movielens.json

Split: 75/25 stratified per course (seed 42, the recommenders library's draw), validation = 10%
of each course's training pairs, drawn the same way. The two-tower
(`conf/ncf/two_tower_ml100k`; add `ncf.ensemble_size=2` for an ensemble of two seeds,
benchmarks/README "A second two-tower, built and measured") and GLMix
(`conf/glmix/tuned_ml100k`: rating > 3 on every rating) choose their epoch / update on
validation; the blender is fitted on the validation part with those models (its labelled pairs
divided in halves at random eight times, `blend.holdout_draws=8`: on each draw every variant
fits on one half and is judged on the other, and the mean over the eight chooses the settings
and the kind, `blend.serve=best`), then refitted on all of it and kept while the models are
refitted on train + validation and serve test. The candidates carry the item-item feature (EASE at L2 500, exact:
rank 1024 >= the 943 learners) and the learner-learner one (`blend=learner_learner`: EASE with
learners as the items, L2 300, exact; chosen on the development split). Test, once, on the same
candidates (the two-tower's top 200 plus popular fallbacks per occupation): NDCG@10 with binary
gain, as the published figures (seen items removed, all 943 users), Recall@10 and per-user AUC.
EASE (L2 chosen on validation, refitted on the whole training part) ranks the whole catalogue,
as in bench_ncf_movielens; the paired comparison of the blend against it uses the same users.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmarks.bench_ncf_movielens import closed_form_baselines, compose_cfg
from benchmarks.blend_harness import command_line, run_seed, seed_result
from evaluation import paired_bootstrap
from experiments.data import prepare_data

NAME = "blend_movielens"
ML100K = ["experiment=ml100k_stratified", "ncf=two_tower_ml100k", "glmix=tuned_ml100k"]


def ease_per_user(out: Path, seed: int, paths: Sequence[str] = ()) -> tuple[pd.Series, dict]:
    """EASE's per-user test NDCG@10 by learner id on the same split, and its summary row.
    paths: the command's `paths.*` overrides (where the data is), which the baseline's own
    config needs as the pipeline's does."""
    cfg = compose_cfg(out, ML100K[0], f"seed={seed}", *paths)
    per_user: dict = {}
    rows = closed_form_baselines(cfg, per_user)
    log = prepare_data(cfg.data, cfg.split).log  # the same log: users are its learner rows
    res = per_user["EASE"]
    ndcg = pd.Series(res.per_user["ndcg@10"], index=log.learner_ids.to_ids(res.users))
    return ndcg, next(r for r in rows if r["model"] == "EASE")


def main() -> None:
    if (cli := command_line(NAME, __doc__)) is None:
        return
    out, seed, extra, name = cli
    overrides = [
        *ML100K,
        "trainer.max_epochs=200",  # as bench_ncf_movielens
        "blend.gain=binary",
        "blend.candidates.group_columns=[segment]",  # MovieLens learners have no language
        "blend.replay.methods=[gradient,nelder_mead,differential_evolution]",
        "blend.candidates.item_item.rank=1024",  # >= min(learners, courses): exact EASE
        # the learner-learner feature, chosen on the development split (README, "More
        # features for the rank blender"); exact as well
        "blend=learner_learner",
        "blend.candidates.learner_learner.rank=1024",
        "blend.serve=best",  # the kind best on validation serves (and is the blend judged)
        # validation is small (10% of the training pairs): one random division of its labels
        # chose the kind by 0.0004 on seed 1 (README); the mean over eight divisions chooses
        "blend.holdout_draws=8",
        *extra,
    ]
    res = run_seed(out, seed, overrides)
    ease, ease_row = ease_per_user(out / "ease", seed, [o for o in extra if o.startswith("paths.")])
    extra_rows = [{"system": "EASE (whole catalogue)", "ndcg@10": ease_row["ndcg@10"],
                   "recall@10": ease_row["recall@10"], "auc": float("nan"),
                   "learners": len(ease)}]  # fmt: skip
    pl = res["per_learner"]
    for system in ("personalized", "rank", "served", "two_tower"):
        if system not in set(pl["system"]):
            continue
        mine = pl[pl["system"] == system].set_index("learner_id")["ndcg@10"]
        common = mine.index.intersection(ease.index)
        t = paired_bootstrap(mine.loc[common], ease.loc[common], n_boot=10_000, seed=0)
        res["blend"]["tournaments"][f"{system} vs EASE"] = vars(t)
    seed_result(name, res, extra_rows=extra_rows, extra={"ease": ease_row})


if __name__ == "__main__":
    main()
