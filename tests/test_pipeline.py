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
    """The pipeline config; the small synthetic platform unless the overrides choose data."""
    chooses_data = any(o.startswith(("data=", "experiment=")) for o in overrides)
    small = [] if chooses_data else ["data=synthetic_small"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        # the data stage only, unless a test switches the ncf stage back on
        return compose(
            "pipeline",
            overrides=[
                *small,
                f"paths.output_dir={tmp_path}",
                "stages.ncf=false",
                "stages.glmix=false",
                "stages.blend=false",
                "stages.export=false",
                *overrides,
            ],
        )


def test_run_writes_report_manifest_and_data(tmp_path):
    metrics = run(compose_cfg(tmp_path))
    report = json.loads((tmp_path / "data_report.json").read_text())
    manifest = json.loads((tmp_path / "run_manifest.json").read_text())
    assert report["tables"]["learners"]["rows"] == 500
    assert [s["step"] for s in report["steps"]] == ["duplicates", "watch_threshold"]
    assert set(report["splits"]) == {"blend", "valid", "test"}
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
            "trainer.max_epochs=2",  # the progress bar stays on: output is no terminal here
            "outputs.plots=false",
            "split.fn.valid_days=20",  # the small platform has 200 days: room for 4 windows
            "split.fn.test_days=20",
            "split.fn.blend_days=20",
            "blend.variants.personalized.learner_l2=[30.0]",
            f"export.sink.path={tmp_path / 'lists'}",
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
    # the main job trains the two-tower into ncf/ and reports its test metrics
    manifest = json.loads((tmp_path / "run_manifest.json").read_text())
    assert 0 < manifest["metrics"]["ncf"]["test"]["test_ndcg@10"] <= 1
    assert (tmp_path / "ncf" / "model" / "weights.pt").exists()
    assert (tmp_path / "ncf" / "embeddings" / "courses.parquet").exists()
    # ... and fits GLMix into glmix/ on the same prepared data
    assert manifest["metrics"]["glmix"]["test"]["auc"] > 0.5
    assert (tmp_path / "glmix" / "model").exists()
    # ... then blends both, and publishes the served lists; the summary says where
    assert {r["system"] for r in manifest["metrics"]["blend"]["test"]} >= {"two_tower", "glmix"}
    assert manifest["metrics"]["export"]["published"]
    assert "published lists: 5,000 rows, version" in out.stdout
    # learners are published in id-map order: a checksum a SQL reader could verify
    from export import current_version, read_manifest

    published = read_manifest(current_version(tmp_path / "lists"))
    assert published["checksum"]["order"] == "learner_id, rank"
    assert str(tmp_path / "lists") in out.stdout and "export gates: learners_known ok" in out.stdout
    # output to a pipe: log lines (one per epoch), no carriage-return progress updates
    assert "\r" not in out.stdout + out.stderr
    assert "epoch 1/2: " in out.stdout and "epoch 2/2: " in out.stdout
    # the run ends with the summary table: every stage, its time and peak memory
    summary = out.stdout[out.stdout.rindex("run summary") :]
    for stage in ("data", "ncf", "glmix", "blend_models", "blend", "evaluate", "export", "total"):
        assert f"\n{stage} " in summary, stage
    assert "blend (test)" in summary and "95% interval" in summary
    # Hydra's job logging writes the same lines into the run's log file
    log_text = (tmp_path / "pipeline.log").read_text()
    assert "epoch 1/2: " in log_text and "run summary" in log_text
    assert [s["name"] for s in manifest["metrics"]["stages"]] == [
        "data", "ncf", "glmix", "blend_models", "blend", "evaluate", "export"
    ]  # fmt: skip


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("overrides", "events", "learners"),
    [
        (("experiment=ml100k_stratified",), 100_000, 943),
        (("experiment=ml100k_gdmix",), 100_000, 943),
        (("data=ml_latest_small", "split=leave_latest", "split.fn.ties=order"), 100_836, 610),
    ],
)
def test_real_data_configs(tmp_path, shared_data, overrides, events, learners):
    cfg = compose_cfg(tmp_path, *overrides, f"paths.data_root={shared_data}", "save_data=false")
    metrics = run(cfg)
    assert metrics["events"] == events and metrics["learners"] == learners
    assert metrics["watched_events"] == events  # every rating counts as a watch


@pytest.mark.parametrize(
    "by, train, test",
    [("course", 75_066, 24_934), ("learner", 74_992, 25_008)],
)
def test_stratified_experiment_reproduces_the_published_split_sizes(
    tmp_path, shared_data, by, train, test
):
    """75/25 on MovieLens-100K, the recommenders library's draw (seed 42), as its MovieLens
    notebook calls it (filter_by="item", the experiment's default) and per learner
    (filter_by="user"): the library's training and test counts (recommenders 1.2.1)."""
    cfg = compose_cfg(
        tmp_path,
        "experiment=ml100k_stratified",
        f"split.fn.by={by}",
        f"paths.data_root={shared_data}",
        "save_data=false",
    )
    run(cfg)
    report = json.loads((tmp_path / "data_report.json").read_text())["splits"]["test"]
    assert report["input_events"] == train and report["label_events"] == test


def test_generic_tables_config(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 5_000
    pd.DataFrame(
        {
            "user": rng.integers(0, 200, n),
            "item": rng.integers(0, 50, n),
            "time": 1_700_000_000 + rng.permutation(n) * 600,
            "seconds": rng.exponential(300, n).round(1),
        }
    ).to_parquet(tmp_path / "events.parquet")
    out = tmp_path / "run"
    cfg = compose_cfg(
        out,
        "data=tables",
        f"data.source.events.path={tmp_path / 'events.parquet'}",
        "data.source.events.columns={learner_id: user, course_id: item, ts: time}",
        "data.source.events.columns.watch_seconds=seconds",
        "data.source.events.fill.impression=false",
        "data.source.events.fill.clicked=nan",
        "data.source.ts_unit=s",
        "split.fn.valid_days=5",
        "split.fn.test_days=5",
        "split.fn.blend_days=5",
        "save_data=false",
    )
    metrics = run(cfg)
    assert metrics["events"] == n
    notes = json.loads((out / "data_report.json").read_text())["notes"]
    assert any("impression" in note for note in notes)  # the filled column is reported


def test_a_ci_change_redraws_the_two_tower_intervals_without_training_again(tmp_path):
    """The two-tower's test intervals follow evaluate.ci / evaluate.n_boot: a rerun with
    evaluate.ci=0.5 reuses the trained stage (same key) and draws its bands again from the
    kept per-learner values: the same band the evaluation gives NDCG@10, narrower than 95%."""
    from tests.pipeline_fakes import FAST

    ncf = [o for o in FAST if not o.startswith(("blend.", "split.fn.blend_days"))]
    args = ["stages.ncf=true", "stages.evaluate=true", "stages.report=false", *ncf]

    def bands() -> tuple[dict, dict]:
        ncf_ci = json.loads((tmp_path / "ncf" / "metrics.json").read_text())["test_ci"]
        rows = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["ncf"]
        at10 = next(r for r in rows["intervals"] if r["name"] == "ndcg" and r["k"] == 10)
        return ncf_ci["test_ndcg@10"], at10

    run(compose_cfg(tmp_path, *args))
    wide, evaluated = bands()
    assert (wide["low"], wide["high"]) == pytest.approx((evaluated["low"], evaluated["high"]))
    run(compose_cfg(tmp_path, *args, "evaluate.ci=0.5"))
    stages = json.loads((tmp_path / "run_manifest.json").read_text())["stages"]
    assert stages["ncf"]["reused"] and not stages["evaluate"]["reused"]
    narrow, evaluated = bands()
    assert (narrow["low"], narrow["high"]) == pytest.approx((evaluated["low"], evaluated["high"]))
    assert wide["low"] < narrow["low"] <= narrow["high"] < wide["high"]
    manifest = json.loads((tmp_path / "run_manifest.json").read_text())["metrics"]["ncf"]
    assert manifest["test_ci"]["test_ndcg@10"] == narrow  # what the run reports
