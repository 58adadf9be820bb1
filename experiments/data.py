"""The data stage every experiment starts with: load or generate, validate, clean, split."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from watchlog import DataReport, EventLog
from watchlog.cleaning import clean
from watchlog.splits import Split
from watchlog.synthetic import PlatformTruth, SyntheticPlatform

__all__ = ["PreparedData", "load_run", "prepare_data"]


@dataclass(frozen=True, eq=False)
class PreparedData:
    log: EventLog  # cleaned, with the `watched` flag
    split: Split
    report: DataReport
    truth: PlatformTruth | None = None  # synthetic platform only
    timings: dict[str, float] = field(default_factory=dict)


def prepare_data(
    data_cfg: DictConfig, split_cfg: DictConfig, report: DataReport | None = None
) -> PreparedData:
    """`data_cfg.source` (a loader or the platform, by `_target_`) -> clean -> `split_cfg.fn`."""
    report = report if report is not None else DataReport()
    timings: dict[str, float] = {}

    start = time.perf_counter()
    # Partial, then call: Hydra would turn a dataclass keyword (the report) into a config node.
    source = instantiate(data_cfg.source, _partial_=True)(report=report)
    log, truth = (
        (source.log, source.truth) if isinstance(source, SyntheticPlatform) else (source, None)
    )
    timings["load_and_validate"] = time.perf_counter() - start

    start = time.perf_counter()
    log = clean(log, instantiate(data_cfg.cleaning), report)
    timings["clean"] = time.perf_counter() - start

    start = time.perf_counter()
    split_fn = instantiate(split_cfg.fn)
    split = split_fn(log, log.select(split_cfg.events), report=report)
    timings["split"] = time.perf_counter() - start
    return PreparedData(log, split, report, truth, timings)


def load_run(run_dir: str | Path) -> tuple[DictConfig, PreparedData]:
    """A finished run's resolved config and its data: the cleaned event log it saved
    (`<run_dir>/eventlog`, validated again on load) split again by its split config, which
    gives the same folds. The synthetic platform's truth is not saved (data.truth is None)."""
    run_dir = Path(run_dir)
    cfg_path, log_dir = run_dir / "resolved_config.yaml", run_dir / "eventlog"
    for path, what in ((cfg_path, "resolved config"), (log_dir, "saved event log (save_data)")):
        if not path.exists():
            raise FileNotFoundError(
                f"{run_dir}: no {what} at {path}; give the output folder of a pipeline run"
            )
    cfg = OmegaConf.load(cfg_path)
    report = DataReport()
    start = time.perf_counter()
    log = EventLog.load(log_dir, report=report)
    timings = {"load": time.perf_counter() - start}
    start = time.perf_counter()
    split = instantiate(cfg.split.fn)(log, log.select(cfg.split.events), report=report)
    timings["split"] = time.perf_counter() - start
    return cfg, PreparedData(log, split, report, None, timings)
