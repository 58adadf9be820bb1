"""What every run writes beside its outputs: resolved config, data fingerprint, code version,
package versions, machine, timings and metrics (`run_manifest.json`)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from watchlog.io import write_json, write_text

__all__ = [
    "code_version", "manifest_metrics", "redact_overrides", "versions", "machine", "update_manifest",
    "write_manifest", "write_resolved_config",
]  # fmt: skip

_log = logging.getLogger(__name__)

# What each stage's result gives the pipeline manifest's "metrics" (export: the whole result).
MANIFEST_METRICS: dict[str, tuple[str, ...]] = {
    "ncf": ("best_epoch", "valid", "test", "test_ci", "members"),  # members: an ensemble's
    "glmix": ("valid", "test"),
    "blend": ("serve", "chosen", "test", "served"),
}

_REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=_REPO)
    return out.stdout.strip()


def code_version() -> str:
    """The checkout's commit (`git describe --always`), `-dirty` when a tracked file differs
    from it, results files under benchmarks/results/ aside (they are outputs: one benchmark's
    fresh results must not mark the next one's code as changed). Outside a git checkout (a
    copy of the source tree, a container image): $NCF_GLMIX_CODE_VERSION when set (the commit
    the copy was made from, set by whoever made it), else the package version."""
    try:
        described = _git("describe", "--always")
        changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                       ":(exclude)benchmarks/results")  # fmt: skip
        return f"{described}-dirty" if changed else described
    except (OSError, subprocess.CalledProcessError):
        if os.environ.get("NCF_GLMIX_CODE_VERSION"):
            return os.environ["NCF_GLMIX_CODE_VERSION"]
        try:
            return f"ncf-glmix {metadata.version('ncf-glmix')}"
        except metadata.PackageNotFoundError:
            return "unknown"


def versions(*packages: str) -> dict[str, str]:
    names = packages or (
        "numpy",
        "scipy",
        "pandas",
        "pyarrow",
        "torch",
        "pytorch-lightning",
        "hydra-core",
        "scikit-learn",
    )
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, Any]:
    import psutil
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The processor's name (Linux: /proc/cpuinfo "model name"), so results from different
    boxes of the same architecture can be told apart; None where it cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def write_resolved_config(out_dir: str | os.PathLike, cfg: DictConfig) -> dict[str, Any]:
    """`resolved_config.yaml` in `out_dir` (atomic); returns the resolved config, URLs'
    passwords as *** (NCF_GLMIX_EXPORT_URL). Long runs write it first, so a crashed run still
    says how it was configured."""
    from export.manifest import redact_urls  # a database URL's password never goes in a file

    resolved = redact_urls(OmegaConf.to_container(cfg, resolve=True))
    write_text(
        Path(out_dir) / "resolved_config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved))
    )
    return resolved


def write_manifest(
    out_dir: str | os.PathLike,
    cfg: DictConfig,
    *,
    data_fingerprint: str,
    metrics: dict[str, Any],
    timings: dict[str, float],
    **extra: Any,
) -> Path:
    """`resolved_config.yaml` and `run_manifest.json` in `out_dir`, each written atomically."""
    out_dir = Path(out_dir)
    resolved = write_resolved_config(out_dir, cfg)
    return write_json(
        out_dir / "run_manifest.json",
        {
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_version": code_version(),
            "data_fingerprint": data_fingerprint,
            "timings_seconds": timings,
            "metrics": metrics,
            "config": resolved,
            "versions": versions(),
            "machine": machine(),
            **extra,
        },
    )


def manifest_metrics(stage: str, result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a stage's result the run manifest's "metrics" keeps under the stage's name
    (None: the stage puts nothing there, e.g. evaluate, whose figures are in its folder)."""
    if result is None:
        return None
    if stage == "export":
        return result
    keys = MANIFEST_METRICS.get(stage)
    return None if keys is None else {k: result[k] for k in keys if k in result}


def redact_overrides(overrides: list[str]) -> list[str]:
    """The command line's overrides with every URL's password in their values replaced by ***
    (`export.redact_url`): `export.sink.url=postgresql://u:pw@host/db` given on the command
    line must not reach the run manifest in plain text. A value is what follows the first `=`.
    """
    from export.manifest import redact_urls

    redacted = []
    for override in overrides:
        key, sep, value = str(override).partition("=")
        redacted.append(f"{key}{sep}{redact_urls(value)}" if sep else override)
    return redacted


def update_manifest(
    out_dir: str | os.PathLike,
    resolved: dict[str, Any],
    stage: str,
    result: dict[str, Any] | None,
    *,
    stages: dict[str, dict[str, Any]],
    overrides: list[str],
    stale: dict[str, list[str]],
) -> Path | None:
    """A finished pipeline run's `run_manifest.json` after one of its stages ran again in its
    folder (the run_dir modes): the config the run now has (`resolved`, as
    `write_resolved_config` returned it), the stage's metrics and stage summary (`stages`:
    {name: {key, reused, code_version}}), one more entry in "updates" (what ran, when, with
    which code and overrides) and "stale" (`experiments.stages.stale_stages`). None when the
    run never wrote a manifest (it stopped early); the file is left as it was when unreadable.
    """
    path = Path(out_dir) / "run_manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        _log.info("%s: none (the run did not finish); nothing to update", path)
        return None
    except ValueError as err:
        _log.warning("%s: unreadable (%s); left as it is", path, err)
        return None
    manifest["config"] = resolved
    part = manifest_metrics(stage, result)
    if part is not None:
        manifest.setdefault("metrics", {})[stage] = part
    manifest.setdefault("stages", {}).update(stages)
    manifest.setdefault("updates", []).append(
        {"stage": stage, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
         "code_version": code_version(), "overrides": redact_overrides(overrides),
         "reused": all(s.get("reused") for s in stages.values())}
    )  # fmt: skip
    manifest["stale"] = stale
    return write_json(path, manifest)
