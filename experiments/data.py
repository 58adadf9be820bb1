"""The data stage every experiment starts with: load or generate, validate, clean, split."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hydra.utils import instantiate
from omegaconf import DictConfig

from watchlog import DataReport, EventLog
from watchlog.cleaning import clean
from watchlog.splits import Split
from watchlog.synthetic import PlatformTruth, SyntheticPlatform

__all__ = ["PreparedData", "prepare_data"]


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
