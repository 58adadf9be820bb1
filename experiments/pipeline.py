"""The main job: `python -m experiments.pipeline [hydra overrides]` (what `make run` calls).

Data stage (generate or load, validate, clean, split) and its report, then each model stage
switched on in `stages` (ncf into <output>/ncf/, glmix into <output>/glmix/). Later stages
(blend, export) plug in the same way.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from experiments.data import prepare_data
from experiments.provenance import write_manifest

__all__ = ["run"]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the pipeline for a composed config; returns the metrics it wrote."""
    out_dir = Path(cfg.paths.output_dir)
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
    write_manifest(
        out_dir, cfg, data_fingerprint=data.log.fingerprint(), metrics=metrics, timings=timings
    )
    print(
        f"\nwrote {out_dir}/data_report.json, run_manifest.json, resolved_config.yaml"
        + (", eventlog/" if cfg.save_data else "")
    )
    print("timings (s): " + ", ".join(f"{k}={v:.2f}" for k, v in timings.items()))
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
