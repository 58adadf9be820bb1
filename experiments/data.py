"""The data stage every experiment starts with: load or generate, validate, clean, split."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from watchlog import DataReport, EventLog
from watchlog.cleaning import clean
from watchlog.eventlog import utc_timestamp
from watchlog.splits import LeakageError, Split
from watchlog.synthetic import PlatformTruth, SyntheticPlatform

__all__ = [
    "PreparedData",
    "check_activity_before",
    "check_rolling_history",
    "TRUTH",
    "load_run",
    "load_truth",
    "prepare_data",
    "use_threads",
]


TRUTH = "truth.npz"  # the synthetic platform's ground truth, beside the saved event log


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
    check_activity_before(data_cfg.cleaning, split, report)
    return PreparedData(log, split, report, truth, timings)


def check_activity_before(cleaning_cfg: DictConfig, split: Split, report: DataReport) -> None:
    """Refuse activity filters that counted events at or after the split's earliest cutoff:
    the filter runs before the split, so validation and test events would decide which
    training events survive. Splits without cutoffs (random, stratified, leave-latest-out:
    the published protocols) count every event, which the report notes."""
    if not (cleaning_cfg.min_learner_watches or cleaning_cfg.min_course_watches):
        return
    before = cleaning_cfg.get("activity_before")
    earliest = split.earliest_cutoff()
    if earliest is None:
        if before is None:
            report.note(
                f"activity filters: watches counted over all events, labels included (a "
                f"{split.kind} split has no cutoff in time; the published protocols filter so)"
            )
        return
    if before is None or utc_timestamp(before) > earliest:
        raise LeakageError(
            f"data.cleaning.activity_before is {before}, but the activity filters "
            f"(min_learner_watches={cleaning_cfg.min_learner_watches}, min_course_watches="
            f"{cleaning_cfg.min_course_watches}) must count only events before the split's "
            f"earliest cutoff, {earliest}: they run before the split, so later (blend, "
            "validation, test) events would decide which training events stay. Set "
            f"data.cleaning.activity_before={earliest.isoformat()} (or earlier), or turn the "
            "filters off (data.cleaning.min_learner_watches=0, min_course_watches=0)"
        )


def use_threads(threads: int | None) -> None:
    """torch's CPU threads for this process (`threads=N` of every command); None: leave them."""
    if threads:
        import torch  # here: the data stage itself does not need torch

        torch.set_num_threads(int(threads))


def load_run(run_dir: str | Path) -> tuple[DictConfig, PreparedData]:
    """A finished run's resolved config and its data: the cleaned event log it saved
    (`<run_dir>/eventlog`, validated again on load) split again by its split config, which
    gives the same folds, and the synthetic platform's ground truth saved beside it
    (`load_truth`; None for other sources)."""
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
    return cfg, PreparedData(log, split, report, load_truth(log_dir), timings)


def load_truth(log_dir: str | Path) -> PlatformTruth | None:
    """The synthetic platform's ground truth saved beside an event log (`<log_dir>/truth.npz`,
    written by the pipeline's data stage); None when there is none (a loaded data set)."""
    path = Path(log_dir) / TRUTH
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return PlatformTruth(**{k: z[k] for k in z.files})


def check_rolling_history(
    split: Split,
    *,
    training: str = "auto",
    n_cutoffs: int = 4,
    horizon_days: float | None = None,
    spacing_days: float | None = None,
    blend_models: bool = False,
    **_: object,
) -> None:
    """Raise before any training when the events do not reach back far enough for the rolling
    training cutoffs (`rolling_folds`), which would otherwise fail after the earlier stages:
    the earliest cutoff is `horizon + (n_cutoffs - 1) x spacing` days before the validation
    cutoff (and, with `blend_models`, before the blend models' own validation cutoff, one
    blend window and one validation window earlier). Takes the datamodule's settings
    (`**cfg.ncf.datamodule`); other keys are ignored."""
    if split.kind != "temporal" or split.valid is None or training == "denoising":
        return
    valid_len = split.test.cutoff - split.valid.cutoff
    horizon = pd.Timedelta(days=horizon_days) if horizon_days else valid_len
    spacing = pd.Timedelta(days=spacing_days) if spacing_days else horizon
    need = horizon + (int(n_cutoffs) - 1) * spacing
    befores = [("the validation cutoff", split.valid.cutoff)]
    if blend_models and split.blend is not None:
        befores.append(("the blend models' validation cutoff (the blend start minus the "
                        "validation length)", split.blend.cutoff - valid_len))  # fmt: skip
    first = split.test.inputs["ts"].iloc[0] if len(split.test.inputs) else None
    for what, before in befores:
        earliest = before - need
        if first is not None and earliest > first:
            continue
        short = (first - earliest) / pd.Timedelta(days=1) if first is not None else float("nan")
        raise ValueError(
            f"the two-tower's rolling training cutoffs need {need / pd.Timedelta(days=1):g} days "
            f"of events before {what}, {before.date()}: horizon {horizon / pd.Timedelta(days=1):g}"
            f" + ({n_cutoffs} - 1) x spacing {spacing / pd.Timedelta(days=1):g} days; the events "
            f"start {first.date() if first is not None else None}, {short:.1f} days too late. Fix: fewer or closer cutoffs "
            "(ncf.datamodule.n_cutoffs, ncf.datamodule.spacing_days), a shorter horizon "
            "(ncf.datamodule.horizon_days), shorter windows (split.fn.valid_days / test_days / "
            "blend_days), or no rolling cutoffs (ncf.datamodule.training=denoising)"
        )
