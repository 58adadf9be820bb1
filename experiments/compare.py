"""Compare the runs of a sweep: `python -m experiments.compare <sweep dir> [--metric KEY]`.

Reads every job folder under the sweep dir (a Hydra multirun folder: one subfolder per job,
each with .hydra/, resolved_config.yaml and, once finished, run_manifest.json), finds the
config keys whose values differ between jobs (dotted keys; paths, output dirs and
timestamps aside; a key that only copies another, e.g. `export.gates.k: ${blend.k}`, is named
under the table instead of shown as a second column) and writes one table of every run, best
first by `metric`:

    <out>/sweep_compare.csv   the table
    <out>/sweep_compare.md    the same as Markdown (the CLI also prints it)
    <out>/sweep_compare.png   the metric against each swept key, one panel per key

Jobs without metrics (failed, still running, killed) stay in the table with their status.
A plain argparse CLI rather than a Hydra one: it reads an existing folder, composes no config
and should not open a run folder of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from experiments.objective import closest, flatten, name_list
from experiments.tables import markdown_table
from watchlog.io import atomic_path, write_text

__all__ = [
    "HEADLINE_METRICS", "DEFAULT_METRICS", "DEFAULT_IGNORE", "Comparison", "Job",
    "collapse_copies", "run",
]  # fmt: skip

logger = logging.getLogger(__name__)

# Columns every table has (where a job reports them): two-tower test NDCG@10, blend served
# NDCG@10, GLMix test AUC, as the pipeline's run_manifest.json "metrics" nests them.
HEADLINE_METRICS = ("ncf.test.test_ndcg@10", "blend.served.ndcg@10", "glmix.test.auc")
# The sort metric when none is given: the first of these that some job has (the pipeline's
# served and two-tower NDCG@10, then the train_ncf and train_glmix commands' own test figures);
# failing those, the first test metric every finished job reports (`_common_test_metric`).
DEFAULT_METRICS = (
    "blend.served.ndcg@10", "ncf.test.test_ndcg@10", "test.test_ndcg@10", "test.auc",
)  # fmt: skip
# Config keys that differ between jobs without being settings (fnmatch patterns on dotted keys).
DEFAULT_IGNORE = (
    "paths.*",
    "hydra.*",
    "*output_dir",
    "*_dir",
    "*sink.path",  # export's list root (export.sink and export.publish.sink)
    "*timestamp*",
    "*_at",
)
STATUS_OK = "ok"


@dataclass(frozen=True)
class Job:
    """One job folder: its flattened config and metrics (empty when it has none)."""

    name: str
    folder: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    status: str


@dataclass(frozen=True)
class Comparison:
    table: pd.DataFrame  # one row per job, best first; failed jobs last
    metric: str | None  # what the table is sorted by (None: no job has a metric)
    swept_keys: list[str]  # one per setting: interpolated copies in `copies`
    csv: Path
    markdown: Path
    plot: Path | None
    copies: dict[str, list[str]] = field(default_factory=dict)  # kept key -> same-valued keys


def _natural_key(name: str) -> list[Any]:
    """'2' before '10': Hydra numbers jobs 0, 1, ... 10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def find_job_folders(sweep_dir: Path) -> list[Path]:
    """Folders with a .hydra/, resolved_config.yaml or run_manifest.json, outermost only (a
    pipeline job has run_manifest.json files of its stages in ncf/, glmix/, blend/ too)."""
    marks = ("run_manifest.json", "resolved_config.yaml", ".hydra/config.yaml")
    found = {p.parent for mark in marks for p in sweep_dir.rglob(mark)}
    found = {f.parent if f.name == ".hydra" else f for f in found}
    outermost = [f for f in found if not any(a in found for a in f.parents)]
    return sorted(outermost, key=lambda f: _natural_key(str(f.relative_to(sweep_dir))))


def _read_config(folder: Path) -> dict[str, Any]:
    """The resolved config: from the manifest, else resolved_config.yaml (written at the
    start of a run), else Hydra's .hydra/config.yaml (interpolations left unresolved)."""
    for path in (folder / "resolved_config.yaml", folder / ".hydra" / "config.yaml"):
        if path.exists():
            loaded = OmegaConf.load(path)
            try:
                container = OmegaConf.to_container(loaded, resolve=True)
            except Exception:  # ${hydra:...} needs a running Hydra: keep the text
                container = OmegaConf.to_container(loaded, resolve=False)
            return container if isinstance(container, dict) else {}
    return {}


def read_job(folder: Path, sweep_dir: Path) -> Job:
    name = str(folder.relative_to(sweep_dir)) if folder != sweep_dir else folder.name
    manifest_path = folder / "run_manifest.json"
    config: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    if not manifest_path.exists():
        status = "failed or unfinished (no run_manifest.json)"
    else:
        try:
            manifest = json.loads(manifest_path.read_text())
            config = manifest.get("config") or {}
            metrics = manifest.get("metrics") or {}
            status = STATUS_OK if metrics else "no metrics in run_manifest.json"
        except (OSError, json.JSONDecodeError) as err:
            status = f"unreadable run_manifest.json ({type(err).__name__}: {err})"
    if not config:
        config = _read_config(folder)
    return Job(name, folder, flatten(config), flatten(metrics), status)


def _canonical(value: Any) -> str:
    """A hashable, order-stable text for comparing config values (lists included)."""
    return json.dumps(value, sort_keys=True, default=str)


_ABSENT = "<absent>"


def _names_folder(value: Any, folder: Path) -> bool:
    return isinstance(value, str) and (str(folder) in value or str(folder.resolve()) in value)


def differing_keys(jobs: list[Job], ignore: tuple[str, ...] = DEFAULT_IGNORE) -> list[str]:
    """Config keys whose values are not the same in every job that has a config (a key only
    some jobs have differs too); ignored patterns and values that name the job's own folder
    (e.g. an output path derived from it) aside."""
    with_config = [j for j in jobs if j.config]
    keys = sorted({k for j in with_config for k in j.config})
    out = []
    for key in keys:
        if any(fnmatchcase(key, pattern) for pattern in ignore):
            continue
        values = [j.config.get(key, _ABSENT) for j in with_config]
        if any(_names_folder(v, j.folder) for j, v in zip(with_config, values, strict=True)):
            continue  # derived from the job's own output folder
        # an unresolved interpolation (a job that stopped before resolving its config) is
        # no evidence of a different setting
        known = [v for v in values if not (isinstance(v, str) and "${" in v)]
        if len({_canonical(v) for v in known}) > 1:
            out.append(key)
    return out


def _override_keys(folder: Path) -> set[str]:
    """The dotted keys a job's command line set (Hydra's .hydra/overrides.yaml), if any."""
    path = folder / ".hydra" / "overrides.yaml"
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    except Exception:  # an unreadable file: no preference, the first key is kept
        return set()
    keys = (str(o).split("=", 1)[0].lstrip("+~") for o in overrides or [])
    return {k for k in keys if k}


def collapse_copies(jobs: list[Job], swept: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(keys, copies): swept keys with the same value as another swept key in every job are
    one setting (an interpolation such as `export.gates.k: ${blend.k}`): one column is kept,
    the key a command line set where one did, else the first; `copies` maps it to the others."""
    with_config = [j for j in jobs if j.config]
    set_by_hand = set().union(*(_override_keys(j.folder) for j in with_config))
    groups: dict[tuple[str, ...], list[str]] = {}
    for key in swept:
        values = tuple(_canonical(j.config.get(key, _ABSENT)) for j in with_config)
        groups.setdefault(values, []).append(key)
    kept, copies = [], {}
    for keys in groups.values():
        first = next((k for k in keys if k in set_by_hand), keys[0])
        kept.append(first)
        if len(keys) > 1:
            copies[first] = [k for k in keys if k != first]
    return sorted(kept), copies


def _choose_metric(jobs: list[Job], metric: str | None) -> str | None:
    available = sorted({k for j in jobs for k, v in j.metrics.items() if _is_number(v)})
    if metric is not None:
        if metric not in available:
            close = closest(metric, available)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"metric={metric!r}: no job in the sweep reports it.{hint} Numeric metrics "
                f"found: {name_list(available) or 'none (no job has finished)'}"
            )
        return metric
    default = next((m for m in DEFAULT_METRICS if m in available), None)
    if default is None and (default := _common_test_metric(jobs)) is not None:
        logger.info("sorting by %s: the first test metric every finished job reports (none "
                    "reports %s; --metric chooses another)", default, " or ".join(DEFAULT_METRICS))  # fmt: skip
    return default


def _common_test_metric(jobs: list[Job]) -> str | None:
    """The first (sorted) numeric metric with a `test` part in its dotted key that every
    finished job reports; None when there is none."""
    finished = [j for j in jobs if j.status == STATUS_OK]
    if not finished:
        return None
    common = set.intersection(
        *({k for k, v in j.metrics.items() if _is_number(v)} for j in finished)
    )
    tests = [k for k in sorted(common) if any(p.startswith("test") for p in k.split("."))]
    return tests[0] if tests else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any) -> Any:
    return value if _is_number(value) or isinstance(value, str | bool) else _canonical(value)


def build_table(
    jobs: list[Job], swept: list[str], metric: str | None, *, minimize: bool = False
) -> pd.DataFrame:
    """One row per job: job, status, swept keys, headline metrics (and `metric`); best first,
    jobs without the metric last, ties in job order."""
    metric_columns = list(HEADLINE_METRICS)
    if metric is not None and metric not in metric_columns:
        metric_columns.insert(0, metric)
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.name, "status": job.status}
        row.update({k: _cell(job.config.get(k, _ABSENT if job.config else None)) for k in swept})
        for m in metric_columns:
            value = job.metrics.get(m)
            row[m] = float(value) if _is_number(value) else np.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=["job", "status", *swept, *metric_columns])
    # headline columns no job reports (e.g. blend in an ncf-only sweep) say nothing
    empty = [m for m in HEADLINE_METRICS if m != metric and table[m].isna().all()]
    table = table.drop(columns=empty)
    if metric is not None:
        table = table.sort_values(
            metric, ascending=minimize, na_position="last", kind="stable"
        ).reset_index(drop=True)
    return table


def _as_number(series: pd.Series) -> pd.Series | None:
    """The values as floats when every one is a number (not bool), else None (categorical)."""
    if all(_is_number(v) for v in series):
        return series.astype(float)
    return None


def plot_metric_by_key(table: pd.DataFrame, swept: list[str], metric: str, path: Path) -> Path:
    """The metric against each swept key (one panel per key; the job when nothing differs).
    Numeric keys on a numeric axis (log when positive and spanning >= 100x), others as
    categories in order of first appearance."""
    from matplotlib.figure import Figure

    done = table[table[metric].notna()]
    keys = swept or ["job"]
    fig = Figure(figsize=(4.2 * len(keys), 3.6))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        x_num = _as_number(done[key])
        if x_num is not None:
            ax.scatter(x_num, done[metric], color="tab:blue", zorder=3)
            if (x_num > 0).all() and x_num.max() >= 100 * x_num.min():
                ax.set_xscale("log")
        else:
            labels = done[key].astype(str)
            categories = list(dict.fromkeys(labels))
            positions = labels.map({c: i for i, c in enumerate(categories)})
            ax.scatter(positions, done[metric], color="tab:blue", zorder=3)
            ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    n_missing = int(table[metric].isna().sum())
    title = f"{metric} by swept key ({len(done)} runs"
    fig.suptitle(title + (f"; {n_missing} without it)" if n_missing else ")"))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def run(
    sweep_dir: str | os.PathLike,
    metric: str | None = None,
    out: str | os.PathLike | None = None,
    *,
    minimize: bool = False,
    ignore: tuple[str, ...] = DEFAULT_IGNORE,
) -> Comparison:
    """Compare the jobs of `sweep_dir`; writes sweep_compare.{csv,md,png} into `out` (default:
    the sweep dir). `metric`: a dotted metrics key to sort and plot by (higher is better
    unless `minimize`); default the first of DEFAULT_METRICS that some job reports."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep_dir: {sweep_dir} is not a folder")
    folders = find_job_folders(sweep_dir)
    if not folders:
        raise FileNotFoundError(
            f"sweep_dir: no job folders under {sweep_dir} (none has .hydra/, "
            "resolved_config.yaml or run_manifest.json); pass the folder `-m` wrote, e.g. "
            "multirun/pipeline/<date>"
        )
    jobs = [read_job(f, sweep_dir) for f in folders]
    swept, copies = collapse_copies(jobs, differing_keys(jobs, ignore))
    metric = _choose_metric(jobs, metric)
    table = build_table(jobs, swept, metric, minimize=minimize)
    out_dir = Path(out) if out is not None else sweep_dir
    csv = write_text(out_dir / "sweep_compare.csv", table.to_csv(index=False))
    title = f"{sweep_dir}: {len(jobs)} jobs" + (f", best first by {metric}" if metric else "")
    same = "".join(
        f"\n{', '.join(others)}: the same value as {key} in every job (not shown)\n"
        for key, others in copies.items()
    )
    md = write_text(
        out_dir / "sweep_compare.md",
        markdown_table(table.astype(object).where(table.notna(), "").to_dict("records"), title)
        + "\n"
        + same,
    )
    plot = None
    if metric is None:
        found = sorted({k for j in jobs for k, v in j.metrics.items() if _is_number(v)})
        logger.warning(
            "no job reports %s, nor a test metric common to every finished job: table written "
            "without a metric column, no plot; choose one with --metric (numeric metrics found: "
            "%s)", " or ".join(DEFAULT_METRICS), name_list(found) or "none",
        )  # fmt: skip
    else:
        plot = plot_metric_by_key(table, swept, metric, out_dir / "sweep_compare.png")
    n_failed = sum(j.status != STATUS_OK for j in jobs)
    if n_failed:
        logger.warning("%d of %d jobs have no metrics (see the status column)", n_failed, len(jobs))
    return Comparison(table, metric, swept, csv, md, plot, copies)


def main(argv: list[str] | None = None) -> Comparison:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("sweep_dir", help="the folder a multirun wrote (multirun/<job>/<date>)")
    parser.add_argument(
        "--metric",
        help="dotted metrics key to sort and plot by, e.g. ncf.valid.val_ndcg@10 (default: "
        f"the first of {', '.join(DEFAULT_METRICS)} that some job reports)",
    )
    parser.add_argument("--out", help="where the table and plot go (default: the sweep dir)")
    parser.add_argument("--minimize", action="store_true", help="lower metric is better")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run(args.sweep_dir, metric=args.metric, out=args.out, minimize=args.minimize)
    print(result.markdown.read_text(), end="")
    print(f"\nwrote {result.csv}, {result.markdown}" + (f", {result.plot}" if result.plot else ""))
    return result


if __name__ == "__main__":
    main()
