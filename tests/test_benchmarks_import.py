"""Every benchmark module imports: they are run by hand, so a renamed helper would otherwise
only show up when someone next measures."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
    if p.stem != "__init__"
)  # fmt: skip


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_module_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    runnable = name.startswith(("bench_", "diagnose_", "run_all"))
    assert not runnable or callable(getattr(module, "main", None)), f"{name} has no main()"
