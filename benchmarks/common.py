"""Shared by every benchmark: machine description, peak memory, timing, results JSON.

Each benchmark is a module with `main()` that prints a table and calls
`write_result(name, rows, ...)`, which writes `benchmarks/results/<name>.json`
(figures with units, machine, date, versions) atomically.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from watchlog.io import write_json

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(
    os.environ.get(
        "NCF_GLMIX_DATA_ROOT", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)


def machine() -> dict[str, Any]:
    import psutil

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def versions(*packages: str) -> dict[str, str]:
    names = packages or ("numpy", "scipy", "pandas", "pyarrow", "torch", "scikit-learn")
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start


def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Minimum wall time over `repeat` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def print_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """Markdown table of `rows` (same keys); printed and returned for README pasting."""
    if not rows:
        return ""
    keys = list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.4g}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    text = (f"### {title}\n\n" if title else "") + "\n".join(lines)
    print(text, flush=True)
    return text


def write_result(
    name: str, rows: list[dict[str, Any]], units: dict[str, str], **extra: Any
) -> Path:
    """benchmarks/results/<name>.json: rows, units, machine, date, versions, command."""
    payload = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "code_version": code_version(),
        "machine": machine(),
        "versions": versions(),
        "units": units,
        "rows": rows,
        **extra,
    }
    return write_json(RESULTS / f"{name}.json", payload)
