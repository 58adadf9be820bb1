"""The main job: `python -m experiments.pipeline [hydra overrides]` (what `make run` calls).

Data stage (generate or load, validate, clean, split) and its report, then each stage
switched on in `stages`:
    ncf      the two-tower into <output>/ncf/ (experiments.train_ncf)
    glmix    GLMix into <output>/glmix/ (experiments.train_glmix)
    blend    the models the blender is fitted with into <output>/blend_models/ (trained on the
             split moved back before the blend window; splits without one use the models
             chosen before the refit), then the blend study and the served lists of every
             learner into <output>/blend/ (experiments.blend)
    export   the served lists published, gated and versioned (experiments.export)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from experiments.data import prepare_data
from experiments.provenance import write_manifest, write_resolved_config
from experiments.schemas import check_config

__all__ = ["run"]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the pipeline for a composed config; returns the metrics it wrote."""
    check_config(cfg)  # keys added with `+` past the schemas, before any work
    out_dir = Path(cfg.paths.output_dir)
    write_resolved_config(out_dir, cfg)
    start = time.perf_counter()
    data = prepare_data(cfg.data, cfg.split)
    print(data.report, flush=True)
    data.report.write_json(out_dir / "data_report.json")

    timings = dict(data.timings)
    if cfg.save_data:
        t = time.perf_counter()
        data.log.save(out_dir / "eventlog")
        timings["save_data"] = time.perf_counter() - t
    ncf_metrics = None
    if cfg.stages.ncf:
        from experiments.train_ncf import train_and_report

        t = time.perf_counter()
        ncf_metrics = train_and_report(cfg, data, out_dir / "ncf")
        timings["ncf"] = time.perf_counter() - t
    glmix_metrics = None
    if cfg.stages.glmix:
        from experiments.train_glmix import train_and_report as train_glmix

        t = time.perf_counter()
        glmix_metrics = train_glmix(cfg, data, out_dir / "glmix")
        timings["glmix"] = time.perf_counter() - t
    blend_metrics = export_result = None
    if cfg.stages.blend:
        t = time.perf_counter()
        blend_metrics = _blend(cfg, data, out_dir)
        timings["blend"] = time.perf_counter() - t
    if cfg.stages.export:
        from experiments.export import export_run

        t = time.perf_counter()
        export_result = export_run(cfg, data, out_dir)
        timings["export"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start

    metrics = {
        "events": len(data.log.events),
        "learners": data.log.n_learners,
        "courses": data.log.n_courses,
        "watched_events": int(data.log.events["watched"].sum()),
        "splits": data.report.splits,
    }
    if glmix_metrics is not None:
        metrics["glmix"] = {k: glmix_metrics[k] for k in ("valid", "test") if k in glmix_metrics}
    if ncf_metrics is not None:
        metrics["ncf"] = {k: ncf_metrics[k] for k in ("best_epoch", "valid", "test")}
    if blend_metrics is not None:
        metrics["blend"] = {k: blend_metrics[k] for k in ("serve", "chosen", "test", "served")}
    if export_result is not None:
        metrics["export"] = export_result
    write_manifest(
        out_dir, cfg, data_fingerprint=data.log.fingerprint(), metrics=metrics, timings=timings
    )
    print(
        f"\nwrote {out_dir}/data_report.json, run_manifest.json, resolved_config.yaml"
        + (", eventlog/" if cfg.save_data else "")
    )
    print("timings (s): " + ", ".join(f"{k}={v:.2f}" for k, v in timings.items()))
    if export_result is not None:
        gates = ", ".join(f"{g['gate']}={'ok' if g['passed'] else 'FAILED'}"
                          for g in export_result["gates"])  # fmt: skip
        print(f"published {export_result['rows']:,} rows as version {export_result['version']} "
              f"at {export_result['location']} (gates: {gates})")  # fmt: skip
    return metrics


def _blend(cfg: DictConfig, data, out_dir: Path) -> dict[str, Any]:
    """The blend stage: blend models (when the split has a blend window), then the study."""
    from experiments.blend import BLEND_MODELS, Models, blend_and_report

    if not (cfg.stages.ncf and cfg.outputs.model):
        raise ValueError("stages.blend needs the two-tower stage and its model (stages.ncf=true, "
                         "outputs.model=true)")  # fmt: skip
    if data.split.blend is not None:
        _fit_blend_models(cfg, data, out_dir / BLEND_MODELS)
    final = Models.load(out_dir)
    early = Models.load_early(out_dir)
    return blend_and_report(cfg, data, final, early, out_dir / "blend")


def _fit_blend_models(cfg: DictConfig, data, out_dir: Path) -> None:
    """The same model configs fitted on the split moved back before the blend window: they
    see nothing from its start on (`Split.for_blend_models`)."""
    from experiments.train_ncf import fit as fit_ncf

    shifted = data.split.for_blend_models()
    trained = fit_ncf(cfg, data, out_dir / "ncf", split=shifted)
    trained.recommender.save(out_dir / "ncf" / "model")
    if cfg.stages.glmix:
        from experiments.train_glmix import fit as fit_glmix

        fit_glmix(cfg, data, shifted).scorer.save(out_dir / "glmix" / "model")


@hydra.main(version_base="1.3", config_path="../conf", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
