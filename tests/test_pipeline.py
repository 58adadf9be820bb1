"""The main job, called as tests call every entry point: compose a config, call run(cfg)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.pipeline import run

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "pipeline",
            overrides=["data=synthetic_small", f"paths.output_dir={tmp_path}", *overrides],
        )


def test_run_writes_report_manifest_and_data(tmp_path):
    metrics = run(compose_cfg(tmp_path))
    report = json.loads((tmp_path / "data_report.json").read_text())
    manifest = json.loads((tmp_path / "run_manifest.json").read_text())
    assert report["tables"]["learners"]["rows"] == 500
    assert [s["step"] for s in report["steps"]] == ["duplicates", "watch_threshold"]
    assert set(report["splits"]) == {"valid", "test"}
    assert manifest["metrics"]["events"] == metrics["events"] == report["tables"]["events"]["rows"]
    assert len(manifest["data_fingerprint"]) == 64 and manifest["code_version"]
    assert manifest["config"]["data"]["source"]["n_learners"] == 500  # resolved config
    assert (tmp_path / "resolved_config.yaml").exists()
    assert (tmp_path / "eventlog" / "events.parquet").exists()


def test_same_seed_same_fingerprint_other_seed_other(tmp_path):
    fp = []
    for i, seed in enumerate((1, 1, 2)):
        out = tmp_path / str(i)
        run(compose_cfg(out, f"seed={seed}", "save_data=false"))
        fp.append(json.loads((out / "run_manifest.json").read_text())["data_fingerprint"])
    assert fp[0] == fp[1] != fp[2]


@pytest.mark.parametrize("split", ["leave_latest", "stratified", "random"])
def test_every_split_config_runs(tmp_path, split):
    run(compose_cfg(tmp_path, f"split={split}", "save_data=false"))
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["splits"]["test"]["label_events"] > 0


def test_command_line_entry_point(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.pipeline",
            "data=synthetic_small",
            "save_data=false",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Split windows" in out.stdout
    assert (tmp_path / "run_manifest.json").exists() and (
        tmp_path / ".hydra" / "config.yaml"
    ).exists()
