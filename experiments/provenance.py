"""What every run writes beside its outputs: resolved config, data fingerprint, code version,
package versions, machine, timings and metrics (`run_manifest.json`)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from watchlog.io import write_json, write_text

__all__ = ["code_version", "versions", "machine", "write_manifest", "write_resolved_config"]

_REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=_REPO)
    return out.stdout.strip()


def code_version() -> str:
    """The checkout's commit (`git describe --always`), `-dirty` when a tracked file differs
    from it, results files under benchmarks/results/ aside (they are outputs: one benchmark's
    fresh results must not mark the next one's code as changed); else the package version."""
    try:
        described = _git("describe", "--always")
        changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                       ":(exclude)benchmarks/results")  # fmt: skip
        return f"{described}-dirty" if changed else described
    except (OSError, subprocess.CalledProcessError):
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
