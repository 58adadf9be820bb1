"""Shared by every benchmark: machine description, peak memory, tables, results JSON.

Each benchmark is a module with `main()` that prints a table and calls
`write_result(name, rows, ...)`, which writes `benchmarks/results/<name>.json`
(figures with units, machine, date, versions) atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from experiments.provenance import code_version, machine, versions
from experiments.summary import peak_rss_gib
from experiments.tables import markdown_table
from watchlog.io import write_json

__all__ = [
    "RESULTS",
    "run_child",
    "code_version",
    "machine",
    "peak_rss_gib",
    "print_table",
    "versions",
    "write_result",
]

RESULTS = Path(__file__).resolve().parent / "results"


def print_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """A benchmark's table to stdout (Markdown, as benchmarks/README.md shows it)."""
    text = markdown_table(rows, title)
    print(text, flush=True)
    return text


def run_child(module: str, *args: str) -> dict[str, Any]:
    """`python -m <module> <args>` in a fresh interpreter, so that its peak memory is this
    measurement's alone; the child prints its result as JSON on its last stdout line."""
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_result(
    name: str,
    rows: list[dict[str, Any]],
    units: dict[str, str],
    *,
    folder: str | Path | None = None,
    **extra: Any,
) -> Path:
    """<folder>/<name>.json (default folder: benchmarks/results): rows, units, machine, date,
    versions, command."""
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
    return write_json(Path(folder or RESULTS) / f"{name}.json", payload)
