"""What a run tells a person at its end: each stage's time and peak memory, the headline
metrics with their bootstrap intervals, and where the outputs are.

    meter = StageMeter()
    with meter.stage("ncf"):
        ...
    log.info("%s", run_summary(meter.records, out_dir, where))

Peak memory is the process's resident peak (VmHWM) *during* the stage: Linux resets it when
`5` is written to /proc/self/clear_refs, so each stage starts from its current size. Where that
is not possible (another OS) the figure is the peak since the process started, and the table
says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import BootstrapCI, bootstrap_ci

__all__ = [
    "Intervals", "StageMeter", "StageRecord", "headline_metrics", "peak_rss_gib",
    "reset_peak_rss", "run_summary", "summary_text", "system_intervals",
]  # fmt: skip

_log = logging.getLogger(__name__)
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class StageRecord:
    name: str
    seconds: float
    peak_gib: float  # resident peak during the stage (or since start when not per_stage)
    per_stage: bool  # False: the peak could not be reset, it is the process's so far
    ended_at: float = 0.0  # wall clock (Unix seconds) at the stage's end
    skipped: str | None = None  # why the data could not run the stage (it ran up to there)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reset_peak_rss() -> bool:
    """Start a new resident-memory peak (VmHWM) for this process, so `peak_rss_gib` measures
    from here; False where /proc cannot reset it (the peak stays the process's so far)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_gib() -> float:
    """Peak resident memory of this process (VmHWM: since start, or since the last reset),
    in GiB; ru_maxrss where /proc is missing."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 2**30  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return rss / 2**30 if sys.platform == "darwin" else rss * 1024 / 2**30


class StageMeter:
    """Times stages and their peak memory; `records` in the order they ran."""

    def __init__(self) -> None:
        self.records: list[StageRecord] = []

    @contextlib.contextmanager
    def stage(self, name: str):
        per_stage = reset_peak_rss()
        _log.info("-- %s", name)
        start = time.perf_counter()
        failed: BaseException | None = None
        try:
            yield
        except BaseException as err:
            failed = err
            raise
        finally:
            rec = StageRecord(
                name, time.perf_counter() - start, peak_rss_gib(), per_stage, time.time()
            )
            self.records.append(rec)
            if failed is None:
                _log.info("-- %s done in %s (peak %.2f GiB)", name, _clock(rec.seconds),
                          rec.peak_gib)  # fmt: skip
            else:  # the run log says so, with the error (the traceback goes to stderr)
                _log.error("-- %s FAILED after %s (peak %.2f GiB): %s: %s", name,
                           _clock(rec.seconds), rec.peak_gib, type(failed).__name__, failed)  # fmt: skip

    def mark_skipped(self, name: str, reason: str) -> None:
        """The latest record of `name` becomes a skipped stage, with the reason."""
        i = max(i for i, r in enumerate(self.records) if r.name == name)
        self.records[i] = replace(self.records[i], skipped=reason)

    def timings(self) -> dict[str, float]:
        return {r.name: r.seconds for r in self.records}


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)} min {s:04.1f} s" if m else f"{s:.1f} s"


@dataclass(frozen=True)
class Intervals:
    """How a run's bootstrap intervals over learners are drawn: `evaluate.n_boot`,
    `evaluate.ci` and the run's `seed`, so the summary, the report, the two-tower's metrics
    and the evaluate stage give one figure one interval."""

    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0

    @classmethod
    def of(cls, cfg: Any) -> Intervals:
        """From a run's config (a DictConfig or its resolved dict); defaults where absent
        (the model commands' own configs have no evaluate group)."""
        e = cfg.get("evaluate") or {}
        return cls(int(e.get("n_boot", 1000)), float(e.get("ci", 0.95)), int(cfg.get("seed") or 0))

    @classmethod
    def of_run(cls, run_dir: Path) -> Intervals:
        """From a run folder's resolved_config.yaml; the defaults without one."""
        from omegaconf import OmegaConf

        path = Path(run_dir) / "resolved_config.yaml"
        if not path.is_file():
            return cls()
        return cls.of(OmegaConf.to_container(OmegaConf.load(path), resolve=False))

    def ci_of(self, values: np.ndarray) -> BootstrapCI:
        return bootstrap_ci(values, n_boot=self.n_boot, ci=self.ci, seed=self.seed)

    def band(self, values: np.ndarray) -> dict[str, float]:
        """{mean, low, high, n} of the non-NaN `values` (NaN: a learner without the metric),
        as the metrics files keep an interval."""
        ci = self.ci_of(values[~np.isnan(values)])
        return {"mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n}

    def describe(self) -> str:
        return (f"{self.ci:.0%} bootstrap intervals over learners ({self.n_boot:,} resamples, "
                f"seed {self.seed})")  # fmt: skip


def system_intervals(
    per_learner, metric: str = "ndcg@10", intervals: Intervals = Intervals()
) -> dict[str, BootstrapCI]:
    """Bootstrap interval over learners of `metric`'s mean for every system of a blend
    study's per-learner table (`blend/test_per_learner.parquet`: columns system, <metric>);
    non-finite values are left out, a system without any is absent."""
    out = {}
    for system, group in per_learner.groupby("system", sort=False):
        values = group[metric].to_numpy(np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            out[system] = intervals.ci_of(values)
    return out


def headline_metrics(out_dir: Path, intervals: Intervals | None = None) -> list[dict[str, Any]]:
    """Test figures of the run's stages, each with its bootstrap interval over learners when
    the stage saved per-learner values (the blend study's systems), else the point figure.
    intervals: default, the run's (`Intervals.of_run`)."""
    intervals = Intervals.of_run(out_dir) if intervals is None else intervals
    rows: list[dict[str, Any]] = []
    blend_dir = out_dir / "blend"
    per_learner = blend_dir / "test_per_learner.parquet"
    if per_learner.exists():
        import pandas as pd
        import pyarrow.parquet as pq

        serve = json.loads((blend_dir / "metrics.json").read_text()).get("serve")
        wanted = ["two_tower", "glmix", serve, "served", "oracle"]  # the headline systems
        # NDCG at the served list length (blend.k): the file's one ndcg@ column
        metric = next(c for c in pq.read_schema(per_learner).names if c.startswith("ndcg@"))
        table = pd.read_parquet(per_learner, columns=["system", metric])
        table = table[table["system"].isin(wanted)]
        bands = system_intervals(table, metric, intervals)
        for system in dict.fromkeys(w for w in wanted if w in bands):
            ci = bands[system]
            rows.append(
                {"stage": "blend (test)", "system": system, "metric": metric,
                 "value": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n}
            )  # fmt: skip
    return rows + _point_metrics(out_dir)


def _point_metrics(out_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ncf = out_dir / "ncf" / "metrics.json"
    if ncf.exists():
        m = json.loads(ncf.read_text())
        ci = m.get("test_ci", {})
        for key in ("test_ndcg@10", "test_recall@10"):
            if key in m.get("test", {}):
                band = ci.get(key, {})
                rows.append(
                    {"stage": "two-tower (test)", "system": m.get("model", "ncf"),
                     "metric": key.removeprefix("test_"), "value": m["test"][key],
                     "low": band.get("low"), "high": band.get("high"), "n": band.get("n")}
                )  # fmt: skip
    glmix = out_dir / "glmix" / "metrics.json"
    if glmix.exists():
        m = json.loads(glmix.read_text())
        # the evaluate stage's intervals over learners, when it ran (experiments.evaluate)
        evaluated = out_dir / "evaluation" / "metrics.json"
        bands = json.loads(evaluated.read_text()).get("glmix") or {} if evaluated.exists() else {}
        for key, band_key in (("auc", "auc"), ("per_entity_auc_mean", "per_learner_auc")):
            if key in m.get("test", {}):
                band = bands.get(band_key) if isinstance(bands.get(band_key), dict) else {}
                rows.append(
                    {"stage": "GLMix (test)", "system": m.get("model", "glmix"), "metric": key,
                     "value": m["test"][key], "low": band.get("low"), "high": band.get("high"),
                     "n": band.get("n", m["test"].get("rows"))}
                )  # fmt: skip
    return rows


def _band(m: dict[str, Any]) -> str:
    if m.get("low") is None or m.get("high") is None:
        return "(no per-learner values)"
    return f"[{m['low']:.4f}, {m['high']:.4f}]"


def run_summary(records: list[StageRecord], out_dir: Path, where: dict[str, str]) -> str:
    """`summary_text` of a run folder: its headline metrics with the run's own intervals
    (`Intervals.of_run`: evaluate.ci, n_boot, seed), the header naming their level."""
    intervals = Intervals.of_run(out_dir)
    return summary_text(records, headline_metrics(out_dir, intervals), where, ci=intervals.ci)


def summary_text(
    records: list[StageRecord],
    metrics: list[dict[str, Any]],
    where: dict[str, str],
    *,
    ci: float,
) -> str:
    """The run's closing summary: stages, headline metrics with their `ci` intervals,
    locations (plain text tables)."""
    total = sum(r.seconds for r in records) or 1e-9
    lines = ["", "run summary", "", f"{'stage':<14} {'time':>14} {'share':>6} {'peak GiB':>9}"]
    for r in records:
        peak = f"{r.peak_gib:.2f}" + ("" if r.per_stage else "*")
        lines.append(f"{r.name:<14} {_clock(r.seconds):>14} {r.seconds / total:>6.0%} {peak:>9}"
                     + ("  skipped (below)" if r.skipped else ""))  # fmt: skip
    lines.append(f"{'total':<14} {_clock(total):>14}")
    for r in records:
        if r.skipped:
            lines += ["", f"skipped {r.name}: {r.skipped}"]
    if not all(r.per_stage for r in records):
        lines.append("* the process's peak so far (this system cannot reset it per stage)")
    if metrics:
        cells = [
            (m["stage"], str(m["system"]), m["metric"], f"{m['value']:.4f}", _band(m))
            for m in metrics
        ]
        head = ("stage", "system", "metric", "value", f"{ci * 100:g}% interval")
        widths = [max(len(c[i]) for c in [head, *cells]) for i in range(4)]
        lines.append("")
        for c in [head, *cells]:
            lines.append("  ".join(x.ljust(w) for x, w in zip(c[:4], widths, strict=True))
                         + "  " + c[4])  # fmt: skip
    if where:
        lines += [""] + [f"{k}: {v}" for k, v in where.items()]
    return "\n".join(lines)
