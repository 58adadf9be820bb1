"""The main job: `python -m experiments.pipeline [hydra overrides]` (what `make run` calls).

Today: data stage (generate or load, validate, clean, split) and the data report.
Model stages (ncf, glmix, blend, export) plug in here as their issues land.
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
    timings["total"] = time.perf_counter() - start

    metrics = {
        "events": len(data.log.events),
        "learners": data.log.n_learners,
        "courses": data.log.n_courses,
        "watched_events": int(data.log.events["watched"].sum()),
        "splits": data.report.splits,
    }
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
