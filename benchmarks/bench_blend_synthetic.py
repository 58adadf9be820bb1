"""The blend on the synthetic platform: temporal split with a blend window, one seed per run.

    python -m benchmarks.bench_blend_synthetic --seed 0          # results/blend_synthetic_seed0.json
    python -m benchmarks.bench_blend_synthetic --summarize 0 1 2 # results/blend_synthetic.json

Split: train -> blend (45 days) -> validation (45) -> test (45). The two-tower and GLMix are
trained twice: on the split moved back before the blend window (the blender is fitted with
them on the blend window's watches) and on the usual split (validation chooses epochs and
updates, then the refit; they serve test). The blender's settings (kind, two-tower
normalization, L2s) are chosen on validation, with the blend models served at the validation
cutoff (`NCFRecommender.at`). Test, once: NDCG@10 (gain = watched seconds), Recall@10 and the
mean per-learner AUC over the candidates (the two-tower's top 200 plus popular fallbacks) of
the two-tower alone, GLMix alone, each blender and the oracle (the platform's true affinity,
on the same candidates and on the whole catalogue); paired bootstrap (10,000 resamples over
learners); replay tuning with gradient, Nelder-Mead and differential evolution.
"""

from __future__ import annotations

from benchmarks.blend_harness import command_line, gap_closed, run_seed, seed_result

NAME = "blend_synthetic"


def main() -> None:
    if (cli := command_line(NAME, __doc__)) is None:
        return
    out, seed, extra, name = cli
    overrides = [
        "data=synthetic",
        "trainer.max_epochs=60",  # early stopping decides, as in bench_ncf_synthetic
        "blend.replay.methods=[gradient,nelder_mead,differential_evolution]",
        *extra,
    ]
    res = run_seed(out, seed, overrides)
    rows = {r["system"]: r for r in res["blend"]["test"]}
    singles = {s: rows[s]["ndcg@10"] for s in ("two_tower", "glmix") if s in rows}
    better = max(singles, key=singles.get)  # on test: the gap is measured, nothing chosen
    gaps = {
        ceiling: gap_closed(rows, "personalized", better, ceiling)
        for ceiling in ("oracle", "oracle (whole catalogue)")
    }
    print(f"gap from {better} to the oracle closed by the personalized blend: {gaps}")
    seed_result(name, res, extra={"gap_closed": gaps, "better_single_on_test": better})


if __name__ == "__main__":
    main()
