"""`make run` from a fresh clone: install time, then the main job's time to the first
published ranked list, each stage's time, share and peak memory.

    python -m benchmarks.bench_make_run                       # clone, make venv, make run
    python -m benchmarks.bench_make_run --name make_run_1m \\
        --args "data=synthetic_1m stages.ncf=false stages.blend=false stages.export=false"

The clone is of this repository's HEAD (a clean commit: the result records it), into a
temporary folder with its own `.venv` (`make venv`, timed: the install), then `make run`
with `--args` as its Hydra overrides (timed from the command's start). The run's manifest
gives each stage's time and peak resident memory (`experiments.summary.StageMeter`); the time
to the first published list is from the `make run` command's start to the end of the export
stage (its wall clock, so Python start-up and imports are in it). `--memory-limit-gib N`
stops a run whose processes together hold more than N GiB and records which stage it was in,
with the finished stages' figures from the run's log (that is how "the stages that fit" in a
machine's memory are found).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.common import print_table, write_result
from experiments.summary import headline_metrics

ROOT = Path(__file__).resolve().parents[1]


def timed(
    cmd: list[str], cwd: Path, log: Path, env: dict[str, str], limit_gib: float | None = None
) -> tuple[float, dict | None]:
    """Run `cmd`, its output into `log`; (wall seconds, None) or, when the resident memory of
    its processes together passed `limit_gib`, (seconds, {rss_gib, stage}) after killing them.
    Raises with the log's tail on any other failure."""
    start = time.time()
    stopped = None
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            time.sleep(1.0)
            rss = _tree_rss_gib(proc.pid)
            if limit_gib is not None and rss > limit_gib:
                stopped = {"rss_gib": round(rss, 2), "stage": _running_stage(log),
                           "limit_gib": limit_gib}  # fmt: skip
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait()
    seconds = time.time() - start
    if proc.returncode and stopped is None:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return seconds, stopped


def _tree_rss_gib(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**30


_STAGE_DONE = re.compile(r"-- (\w+) done in (?:(\d+) min )?([\d.]+) s \(peak ([\d.]+) GiB\)")
_STAGE_START = re.compile(r"\] -- (\w+)$")


def _running_stage(log: Path) -> str | None:
    started = [m.group(1) for m in map(_STAGE_START.search, log.read_text().splitlines()) if m]
    return started[-1] if started else None


def stages_from_log(log: Path) -> list[dict]:
    """The finished stages' time and peak from the run's log lines (StageMeter's), for a run
    stopped before it wrote its manifest."""
    out = []
    for m in map(_STAGE_DONE.search, log.read_text().splitlines()):
        if m:
            seconds = 60 * int(m.group(2) or 0) + float(m.group(3))
            out.append({"name": m.group(1), "seconds": seconds, "peak_gib": float(m.group(4))})
    return out


def fresh_clone(work: Path) -> tuple[Path, str, dict[str, str]]:
    """This repository's HEAD cloned into `work/ncf-glmix`: (clone, commit, environment for
    its commands: progress as log lines, no inherited virtual environment)."""
    clone = work / "ncf-glmix"
    head = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", head], cwd=clone, check=True)
    env = {**os.environ, "NCF_GLMIX_PROGRESS": "log"}
    env.pop("VIRTUAL_ENV", None)
    return clone, head, env


def _seconds_per_epoch(path: Path) -> float | None:
    return json.loads(path.read_text())["timings"]["seconds_per_epoch"] if path.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--args", default="", help="Hydra overrides for make run")
    ap.add_argument("--name", default="make_run", help="results/<name>.json")
    ap.add_argument("--keep", type=Path, default=None, help="clone here and keep it")
    ap.add_argument("--memory-limit-gib", type=float, default=None,
                    help="stop make run when its processes hold more (recorded, not an error)")  # fmt: skip
    a = ap.parse_args()

    work = a.keep or Path(tempfile.mkdtemp(prefix="bench_make_run_"))
    clone, head, env = fresh_clone(work)
    install_s, _ = timed(["make", "venv"], clone, work / "install.log", env)

    run_dir = work / "run"
    args = f"{a.args} hydra.run.dir={run_dir}".strip()
    start = time.time()
    run_s, stopped = timed(
        ["make", "run", f"ARGS={args}"], clone, work / "run.log", env, a.memory_limit_gib
    )
    if stopped is None:
        manifest = json.loads((run_dir / "run_manifest.json").read_text())
        stages = manifest["metrics"]["stages"]
    else:  # no manifest: the finished stages from the log
        manifest = {"metrics": {}}
        stages = stages_from_log(work / "run.log")
    total = sum(s["seconds"] for s in stages) or 1e-9
    rows = [
        {"stage": s["name"], "seconds": round(s["seconds"], 1),
         "share": round(s["seconds"] / total, 3), "peak_gib": round(s["peak_gib"], 2)}
        for s in stages
    ]  # fmt: skip
    export = next((s for s in stages if s["name"] == "export"), None)
    first_list_s = export["ended_at"] - start if export and "ended_at" in export else None
    summary = {
        "clone_commit": head,
        "make_run_args": a.args,
        "install_s": round(install_s, 1),
        "make_run_s": round(run_s, 1),
        "first_list_s": None if first_list_s is None else round(first_list_s, 1),
        "first_list_with_install_s": (
            None if first_list_s is None else round(install_s + first_list_s, 1)
        ),
        "stages_total_s": round(total, 1),
        "stopped": stopped,
        "peak_gib": round(max((s["peak_gib"] for s in stages), default=0.0), 2),
        # the run summary's headline figures, 95% bootstrap intervals over learners
        "headline": headline_metrics(run_dir) if stopped is None else [],
        "ncf_seconds_per_epoch": _seconds_per_epoch(run_dir / "ncf" / "metrics.json"),
        "served": manifest["metrics"].get("blend", {}).get("served"),
        "glmix_test": manifest["metrics"].get("glmix", {}).get("test"),
    }
    print_table(rows, f"make run {a.args or '(defaults)'}: stages")
    print(json.dumps(summary, indent=1, default=str))
    print(f"wrote {write_result(a.name, rows, {'seconds': 's', 'peak_gib': 'GiB'}, **summary)}")


if __name__ == "__main__":
    main()
