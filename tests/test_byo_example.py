"""The README's "Bring your own data" example: the README shows what run.sh runs, and run.sh
runs (one epoch) to a baselines table, published lists and a skipped GLMix that says why."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "lastfm_like" / "run.sh"


def _overrides(text: str) -> set[str]:
    """Every `key=value` word of the TABLES=( ... ) array in `text` ($DATA expanded)."""
    code = "\n".join(line.split("#")[0] for line in text.splitlines())  # comments out
    block = re.search(r"TABLES=\((.*?)\)", code, re.S).group(1)
    words = shlex.split(block)
    return {w.replace("$DATA", "examples/lastfm_like") for w in words}


def test_the_readme_shows_the_mapping_run_sh_uses():
    readme = (ROOT / "README.md").read_text()
    assert _overrides(readme) == _overrides(SCRIPT.read_text())
    assert "bash examples/lastfm_like/run.sh" in readme
    assert "+data" not in readme  # documented keys need no `+`


def test_the_example_data_is_what_its_script_draws(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from make_data import draw
    finally:
        sys.path.pop(0)
    user_artists, artists = draw()
    shipped = (SCRIPT.parent / "user_artists.dat").read_text()
    assert shipped == user_artists.to_csv(sep="\t", index=False)
    assert (SCRIPT.parent / "artists.dat").read_text() == artists.to_csv(sep="\t", index=False)


@pytest.mark.slow
def test_the_example_runs_to_published_lists(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "NCF_GLMIX_PROGRESS": "off",
           # one epoch covers ~2% of the catalogue: the gate is for trained lists
           "PIPELINE_ARGS": "export.gates.min_coverage=0.01 blend.n_boot=200"}  # fmt: skip
    if not (ROOT / ".venv" / "bin" / "python").exists():  # run.sh calls the repo's .venv
        pytest.skip("run.sh needs the repository's .venv (make venv)")
    done = subprocess.run(
        ["bash", str(SCRIPT), "threads=1", "trainer.max_epochs=1"],  # keys both commands have
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    out = tmp_path / "out"
    table = json.loads((out / "baselines" / "baselines.json").read_text())
    assert {r["model"] for r in table["rows"]} >= {"two_tower", "mf", "EASE", "popularity"}
    manifest = json.loads((out / "pipeline" / "run_manifest.json").read_text())
    assert "no impressions" in manifest["metrics"]["skipped"]["glmix"]
    assert (out / "lists" / "current").exists()
    log = (out / "pipeline" / "pipeline.log").read_text()
    assert "course map: coloured by popularity" in log
