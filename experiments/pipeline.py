"""The main job: `python -m experiments.pipeline [hydra overrides]` (what `make run` calls).

Data stage (generate or load, validate, clean, split) and its report, then each stage
switched on in `stages`:
    ncf      the two-tower into <output>/ncf/ (experiments.train_ncf)
    glmix    GLMix into <output>/glmix/ (experiments.train_glmix)
    blend    the models the blender is fitted with into <output>/blend_models/ (trained on the
             split moved back before the blend window; splits without one use the models
             chosen before the refit), then the blend study and the served lists of every
             learner into <output>/blend/ (experiments.blend)
    evaluate the saved models on the test fold at several K, with intervals and per-segment
             rows, into <output>/evaluation/ (experiments.evaluate)
    export   the served lists published, gated and versioned (experiments.export)
    report   one self-contained page of the run, <output>/report.html (experiments.report)
A model stage this data cannot run (GLMix on data without impressions, unless
`glmix.rows.negatives=sampled`) is skipped with its reason in the summary and the manifest
(`metrics.skipped`); the blend, evaluation and export then go on without it (the blend
serves the two-tower alone). A stage whose config and data are unchanged is reused, a killed one resumes
(experiments.stages; `reuse=false` recomputes everything). The run ends with a summary: each
stage's time and peak memory, the headline metrics with intervals, where the outputs are.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from experiments.data import check_rolling_history
from experiments.objective import objective_value, require_objective_for_optuna
from experiments.paths import pin_relative_paths
from experiments.provenance import manifest_metrics, write_manifest, write_resolved_config
from experiments.ranks import is_data_parallel, is_writer
from experiments.run_log import log_into_run_folder
from experiments.schemas import check_config
from experiments.stages import Stages, stale_stages, warn_stale
from experiments.summary import Intervals, StageMeter, run_summary

__all__ = ["fit_blend_models", "run"]

_log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the pipeline for a composed config; returns the metrics it wrote."""
    check_config(cfg)  # keys added with `+` past the schemas, before any work
    pin_relative_paths(cfg)  # the saved config names the same files from any directory
    out_dir = Path(cfg.paths.output_dir)
    # Under trainer=ddp* every rank runs this; rank 0 writes, the others join the collective fits
    # (the two-tower's, GLMix's, the blend models'), then stop. Such runs never reuse or resume.
    writer, distributed = is_writer(), is_data_parallel(cfg.trainer)
    resume = not distributed
    if writer:
        write_resolved_config(out_dir, cfg)
    meter = StageMeter()
    stages = Stages(cfg, out_dir, distributed=distributed, writer=writer)
    with meter.stage("data"):
        data = stages.data()
        _log.info("%s", data.report)
        if writer:
            data.report.write_json(out_dir / "data_report.json")
        if cfg.save_data and "data" not in stages.reused:
            stages.save_data(data)
    timings = dict(data.timings)
    if cfg.stages.ncf:  # before any training: data too short for the rolling cutoffs
        check_rolling_history(data.split, **cfg.ncf.datamodule, blend_models=cfg.stages.blend)
    ncf_metrics = glmix_metrics = blend_metrics = export_result = None
    if cfg.stages.ncf:
        with meter.stage("ncf"):  # the import (torch, Lightning) belongs to the stage's time
            from experiments.train_ncf import redraw_test_intervals, train_and_report

            ncf_metrics = stages.run(
                "ncf", out_dir / "ncf", lambda f: train_and_report(cfg, data, f, resume=resume),
                load=lambda f: redraw_test_intervals(f, Intervals.of(cfg)),  # evaluate.ci's
            )  # fmt: skip
    skipped: dict[str, str] = {}  # stage -> why this data cannot run it
    if cfg.stages.glmix:
        with meter.stage("glmix"):
            from experiments.train_glmix import train_and_report as train_glmix
            from glmix.rows import DataDoesNotFit

            try:
                glmix_metrics = stages.run(
                    "glmix", out_dir / "glmix", lambda f: train_glmix(cfg, data, f, resume=resume)
                )
            except DataDoesNotFit as err:  # this data cannot give GLMix rows: go on without it
                skipped["glmix"] = str(err)
                _log.warning("glmix skipped: %s", err)
        if "glmix" in skipped:
            meter.mark_skipped("glmix", skipped["glmix"])
    with_glmix = bool(cfg.stages.glmix) and "glmix" not in skipped
    if not writer:  # the blend models are the last collective fits; the rest is rank 0's
        if cfg.stages.blend and data.split.blend is not None:
            from experiments.blend import BLEND_MODELS

            fit_blend_models(cfg, data, out_dir / BLEND_MODELS, resume=False,
                             with_glmix=with_glmix)  # fmt: skip
        return {}
    if cfg.stages.blend:
        blend_metrics = _blend(
            cfg, data, out_dir, stages, meter, resume=resume, with_glmix=with_glmix
        )
    if cfg.stages.evaluate:
        with meter.stage("evaluate"):
            from experiments.evaluate import EVALUATION, evaluate_run

            stages.run("evaluate", out_dir / EVALUATION, lambda f: evaluate_run(cfg, data, out_dir))
    if cfg.stages.export:
        with meter.stage("export"):
            from experiments.export import export_run

            export_result = stages.run(
                "export", out_dir, lambda f: export_run(cfg, data, f), clear=False,
                load=lambda f: json.loads((f / "export.json").read_text()),
                record=out_dir / "export_stage.json",
            )  # fmt: skip
    timings.update(meter.timings())
    timings["total"] = sum(r.seconds for r in meter.records)

    metrics = {
        "events": len(data.log.events),
        "learners": data.log.n_learners,
        "courses": data.log.n_courses,
        "watched_events": int(data.log.events["watched"].sum()),
        "splits": data.report.splits,
        "stages": [r.to_dict() for r in meter.records],  # reuse: the manifest's own "stages"
        "skipped": skipped,
    }
    for stage, result in (("glmix", glmix_metrics), ("ncf", ncf_metrics),
                          ("blend", blend_metrics), ("export", export_result)):  # fmt: skip
        if result is not None:
            metrics[stage] = manifest_metrics(stage, result)
    stale = stale_stages(out_dir)  # outputs of stages switched off here, older than their inputs
    write_manifest(
        out_dir, cfg, data_fingerprint=data.log.fingerprint(), metrics=metrics, timings=timings,
        stages=stages.summary(), stale=stale,
    )  # fmt: skip
    warn_stale(stale, out_dir)
    if cfg.stages.get("report", False):
        with meter.stage("report"):  # after the manifest: the report shows it
            from experiments.report import build_report

            build_report(out_dir)  # <output>/report.html
    _log.info("%s", run_summary(meter.records, out_dir, _where(cfg, out_dir, export_result)))
    return metrics


def _where(cfg: DictConfig, out_dir: Path, export_result: dict | None) -> dict[str, str]:
    """Where a person finds the run's outputs, for the summary's last lines."""
    where = {"run folder": str(out_dir), "manifest": str(out_dir / "run_manifest.json")}
    log_file = out_dir / f"{_job_name()}.log"
    if log_file.exists():
        where["log"] = str(log_file)
    if (out_dir / "report.html").exists():
        where["report"] = str(out_dir / "report.html")
    if export_result is not None:
        gates = ", ".join(f"{g['gate']} {'ok' if g['passed'] else 'FAILED'}"
                          for g in export_result["gates"])  # fmt: skip
        where["published lists"] = (
            f"{export_result['rows']:,} rows, version {export_result['version']}, "
            f"at {export_result['location']}"
        )
        where["export gates"] = gates
    return where


def _job_name() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.name if HydraConfig.initialized() else "pipeline"


def _blend(
    cfg: DictConfig,
    data,
    out_dir: Path,
    stages: Stages,
    meter: StageMeter,
    *,
    resume: bool,
    with_glmix: bool,
) -> dict[str, Any]:
    """The blend stage: blend models (when the split has a blend window), then the study."""
    from experiments.blend import BLEND_MODELS, Models, blend_and_report

    if not (cfg.stages.ncf and cfg.outputs.model):
        raise ValueError("stages.blend needs the two-tower stage and its model (stages.ncf=true, "
                         "outputs.model=true)")  # fmt: skip
    if data.split.blend is not None:
        with meter.stage("blend_models"):
            stages.run("blend_models", out_dir / BLEND_MODELS,
                       lambda f: fit_blend_models(cfg, data, f, resume=resume,
                                                  with_glmix=with_glmix),
                       load=lambda f: None)  # fmt: skip
    with meter.stage("blend"):
        final = Models.load(out_dir)
        early = Models.load_early(out_dir)
        return stages.run(
            "blend", out_dir / "blend", lambda f: blend_and_report(cfg, data, final, early, f)
        )


def fit_blend_models(
    cfg: DictConfig, data, out_dir: Path, *, resume: bool, with_glmix: bool | None = None
) -> None:
    """The same model configs fitted on the split moved back before the blend window: they
    see nothing from its start on (`Split.for_blend_models`). with_glmix: fit GLMix too
    (default `stages.glmix`; False when the GLMix stage was skipped on this data)."""
    from experiments.train_ncf import fit as fit_ncf

    shifted = data.split.for_blend_models()
    trained = fit_ncf(cfg, data, out_dir / "ncf", split=shifted, resume=resume)
    if is_writer():
        trained.recommender.save(out_dir / "ncf" / "model")
    if cfg.stages.glmix if with_glmix is None else with_glmix:
        from experiments.train_glmix import fit as fit_glmix

        state_dir = out_dir / "glmix" if resume else None
        scorer = fit_glmix(cfg, data, shifted, state_dir=state_dir).scorer
        if is_writer():
            scorer.save(out_dir / "glmix" / "model")


@hydra.main(version_base="1.3", config_path="../conf", config_name="pipeline")
def main(cfg: DictConfig) -> float | None:
    """Returns the metric named by `objective` (None when unset): what sweepers optimize."""
    log_into_run_folder(cfg.paths.output_dir, _job_name())
    require_objective_for_optuna(cfg)
    return objective_value(run(cfg), cfg.get("objective"))


if __name__ == "__main__":
    main()
