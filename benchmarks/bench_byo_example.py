"""A new user's own data, from a fresh clone: the README's "Bring your own data" example.

    python -m benchmarks.bench_byo_example

Clones this repository's HEAD (a clean commit: the result records it) into a temporary
folder, creates its `.venv` (`make venv`, timed: the install), then runs the README's example
exactly, `bash examples/lastfm_like/run.sh threads=1` (a Last.fm-format log with other column
names, no times, no impressions): the baselines table, then the main job to published lists.
Recorded: the install time, the time from the example's start to the first trained model
(the baselines command's end: its table holds the trained MF and two-tower), to the published
lists, and the baselines table and the main job's headline figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.bench_make_run import fresh_clone, timed
from benchmarks.common import print_table, write_result
from experiments.summary import headline_metrics

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, default=None, help="clone here and keep it")
    a = ap.parse_args()
    work = a.keep or Path(tempfile.mkdtemp(prefix="bench_byo_"))
    clone, head, env = fresh_clone(work)
    env["OUT"] = str(work / "out")  # run.sh's output root
    install_s, _ = timed(["make", "venv"], clone, work / "install.log", env)

    start = time.time()
    run_s, _ = timed(
        ["bash", "examples/lastfm_like/run.sh", "threads=1"], clone, work / "run.log", env
    )
    out = work / "out"
    baselines = json.loads((out / "baselines" / "baselines.json").read_text())
    first_model_s = (out / "baselines" / "baselines.json").stat().st_mtime - start
    manifest = json.loads((out / "pipeline" / "run_manifest.json").read_text())
    export = next(s for s in manifest["metrics"]["stages"] if s["name"] == "export")
    rows = baselines["rows"]
    summary = {
        "clone_commit": head,
        "command": "bash examples/lastfm_like/run.sh threads=1",
        "install_s": round(install_s, 1),
        "example_s": round(run_s, 1),
        "first_trained_model_s": round(first_model_s, 1),
        "first_trained_model_with_install_s": round(install_s + first_model_s, 1),
        "published_lists_s": round(export["ended_at"] - start, 1),
        "skipped": manifest["metrics"].get("skipped"),
        "headline": headline_metrics(out / "pipeline"),
    }
    print_table(rows, "Bring your own data (examples/lastfm_like): baselines, test")
    print(json.dumps(summary, indent=1, default=str))
    print(f"wrote {write_result('byo_example', rows, {'seconds': 's'}, **summary)}")


if __name__ == "__main__":
    main()
