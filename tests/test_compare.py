"""Sweeps: experiments.compare on hand-made and real multirun folders, the objective a sweep
optimizes (experiments.objective), and the Optuna example (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from experiments import compare
from experiments.objective import flatten, objective_value

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(job: Path, bag_dim: int, methods: list[str]) -> dict:
    return {
        "seed": 0,
        "paths": {"output_dir": str(job), "root_dir": "."},
        "ncf": {"model": {"bag_dim": bag_dim, "mlp": [256, 128]}, "module": {"lr": 0.001}},
        "blend": {"replay": {"methods": methods}},
        "export": {"sink": {"path": f"{job}/lists"}},
    }


def _finished_job(sweep: Path, name: str, bag_dim: int, methods: list[str], metrics: dict):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    config = _config(job, bag_dim, methods)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    manifest = {"finished_at": f"2026-01-0{name}T00:00:00", "config": config, "metrics": metrics}
    (job / "run_manifest.json").write_text(json.dumps(manifest))
    # a stage's own manifest inside the job folder is not another job
    (job / "ncf").mkdir()
    (job / "ncf" / "run_manifest.json").write_text(json.dumps({"config": {}, "metrics": {}}))


def _metrics(ncf: float, served: float | None, auc: float) -> dict:
    m = {"ncf": {"test": {"test_ndcg@10": ncf}, "valid": {"val_ndcg@10": ncf / 2}}}
    m["glmix"] = {"test": {"auc": auc}}
    if served is not None:
        m["blend"] = {"served": {"ndcg@10": served}, "test": [{"system": "blend"}]}
    return m


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Three jobs: two finished (bag_dim 16 and 32), one that died after Hydra wrote its
    .hydra/config.yaml (unresolved interpolations, no manifest)."""
    sweep = tmp_path / "multirun" / "pipeline" / "2026-01-01_00-00-00"
    _finished_job(sweep, "0", 16, ["gradient"], _metrics(0.30, 0.20, 0.70))
    _finished_job(sweep, "1", 32, ["gradient"], _metrics(0.25, 0.28, 0.65))
    failed = sweep / "2"
    (failed / ".hydra").mkdir(parents=True)
    unresolved = _config(failed, 64, ["gradient"])
    unresolved["paths"]["output_dir"] = "${hydra:runtime.output_dir}"
    unresolved["ncf"]["module"]["lr"] = "${lr}"  # an interpolation is no evidence of a change
    (failed / ".hydra" / "config.yaml").write_text(yaml.safe_dump(unresolved))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_compare_finds_swept_keys_orders_best_first_and_lists_the_failed_job(sweep, tmp_path):
    out = tmp_path / "report"
    result = compare.run(sweep, out=out)
    assert result.swept_keys == ["ncf.model.bag_dim"]  # paths, sink path, timestamps ignored
    assert result.metric == "blend.served.ndcg@10"  # the default: served NDCG when present
    table = result.table
    assert table["job"].tolist() == ["1", "0", "2"]  # 0.28 > 0.20, the failed job last
    assert table["ncf.model.bag_dim"].tolist() == [32, 16, 64]
    assert table["status"].tolist()[:2] == ["ok", "ok"]
    assert "no run_manifest.json" in table["status"].iloc[2]
    assert math.isnan(table["blend.served.ndcg@10"].iloc[2])
    assert table["glmix.test.auc"].tolist()[:2] == [0.65, 0.70]
    assert list(table.columns) == [
        "job", "status", "ncf.model.bag_dim",
        "ncf.test.test_ndcg@10", "blend.served.ndcg@10", "glmix.test.auc",
    ]  # fmt: skip
    written = pd.read_csv(out / "sweep_compare.csv", dtype={"job": str})
    assert written["job"].tolist() == ["1", "0", "2"]
    markdown = (out / "sweep_compare.md").read_text()
    assert "| 2 | failed or unfinished (no run_manifest.json) | 64 |" in markdown
    assert result.plot == out / "sweep_compare.png"
    assert result.plot.read_bytes()[:8] == PNG_MAGIC


def test_compare_sorts_by_a_chosen_metric_and_can_minimize(sweep):
    by_ncf = compare.run(sweep, metric="ncf.test.test_ndcg@10")
    assert by_ncf.table["job"].tolist() == ["0", "1", "2"]
    by_auc_low = compare.run(sweep, metric="glmix.test.auc", minimize=True)
    assert by_auc_low.table["job"].tolist() == ["1", "0", "2"]
    assert (sweep / "sweep_compare.png").exists()  # out defaults to the sweep dir
    # a metric outside the headline ones becomes a column of its own
    by_valid = compare.run(sweep, metric="ncf.valid.val_ndcg@10")
    assert by_valid.table.columns[3] == "ncf.valid.val_ndcg@10"


def test_an_interpolated_copy_of_a_swept_key_is_one_column(tmp_path):
    """Sweeping blend.k moves export.gates.k (${blend.k}) too: one setting, one column."""
    sweep = tmp_path / "sweep"
    for name, k in (("0", 5), ("1", 10)):
        _finished_job(sweep, name, 16, ["gradient"], _metrics(0.3, 0.2 + k / 100, 0.7))
        for path in (sweep / name / "resolved_config.yaml", sweep / name / "run_manifest.json"):
            text = path.read_text()
            doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            config = doc["config"] if path.suffix == ".json" else doc
            config["blend"]["k"], config["export"]["gates"] = k, {"k": k}
            path.write_text(json.dumps(doc) if path.suffix == ".json" else yaml.safe_dump(doc))
        (sweep / name / ".hydra" / "overrides.yaml").write_text(f"- export.gates.k={k}\n")
    result = compare.run(sweep)
    assert result.swept_keys == ["export.gates.k"]  # the key the command line set
    assert result.copies == {"export.gates.k": ["blend.k"]}
    assert "blend.k: the same value as export.gates.k in every job" in result.markdown.read_text()
    (sweep / "0" / ".hydra" / "overrides.yaml").unlink()
    (sweep / "1" / ".hydra" / "overrides.yaml").unlink()
    assert compare.run(sweep).swept_keys == ["blend.k"]  # no command line: the first key


def test_compare_unknown_metric_names_it(sweep):
    with pytest.raises(KeyError, match=r"metric='ncf\.test\.ndcg'.*ncf\.test\.test_ndcg@10"):
        compare.run(sweep, metric="ncf.test.ndcg")


def test_compare_unknown_metric_suggests_the_closest_and_counts_them(tmp_path):
    """More metrics than are listed: the closest named, and how many there are (the first
    40 were listed with nothing saying the list was cut)."""
    sweep = tmp_path / "sweep"
    many = {"ncf": {"test": {f"test_m{i:02d}": 0.1 for i in range(60)}}}
    many["ncf"]["test"]["test_ndcg@10"] = 0.2
    _finished_job(sweep, "0", 16, ["gradient"], many)
    with pytest.raises(KeyError) as err:
        compare.run(sweep, metric="ncf.test.test_ndgc@10")
    text = str(err.value)
    assert "Did you mean ncf.test.test_ndcg@10" in text and "(61 in all)" in text


def test_a_train_ncf_sweep_is_sorted_by_its_own_test_metric(tmp_path):
    """The train_ncf command's manifest nests its figures at the top (test.test_ndcg@10):
    the table had no metric column and no plot."""
    sweep = tmp_path / "sweep"
    for name, bag_dim, ndcg in (("0", 16, 0.1), ("1", 32, 0.3)):
        metrics = {"test": {"test_ndcg@10": ndcg}, "valid": {"val_ndcg@10": ndcg / 2}}
        _finished_job(sweep, name, bag_dim, ["gradient"], metrics)
    result = compare.run(sweep)
    assert result.metric == "test.test_ndcg@10"
    assert result.table["test.test_ndcg@10"].tolist() == [0.3, 0.1]
    assert result.plot is not None


def test_without_a_default_metric_the_first_common_test_metric_sorts(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    _finished_job(sweep, "0", 16, ["gradient"], {"events": 3, "x": {"test": {"hr@5": 0.2}}})
    _finished_job(sweep, "1", 32, ["gradient"], {"events": 3, "x": {"test": {"hr@5": 0.4}}})
    with caplog.at_level("INFO", logger="experiments.compare"):
        result = compare.run(sweep)
    assert result.metric == "x.test.hr@5" and result.table["x.test.hr@5"].tolist() == [0.4, 0.2]
    assert "the first test metric every finished job reports" in caplog.text


def test_compare_categorical_keys_and_ncf_only_sweeps(tmp_path):
    sweep = tmp_path / "sweep"
    _finished_job(sweep, "0", 16, ["gradient"], {"ncf": {"test": {"test_ndcg@10": 0.1}}})
    _finished_job(sweep, "1", 16, ["gradient", "nelder_mead"], {"ncf": {"test": {"test_ndcg@10": 0.2}}})  # fmt: skip
    result = compare.run(sweep)
    assert result.swept_keys == ["blend.replay.methods"]
    assert result.metric == "ncf.test.test_ndcg@10"  # no blend stage: the two-tower's
    assert result.table["blend.replay.methods"].tolist() == ['["gradient", "nelder_mead"]', '["gradient"]']  # fmt: skip
    assert "blend.served.ndcg@10" not in result.table.columns  # no job reports it
    assert result.plot.read_bytes()[:8] == PNG_MAGIC


def test_compare_without_metrics_writes_the_table_and_no_plot(tmp_path):
    sweep = tmp_path / "sweep"
    _finished_job(sweep, "0", 16, ["gradient"], {"events": 10})
    _finished_job(sweep, "1", 32, ["gradient"], {"events": 10})
    result = compare.run(sweep)
    assert result.metric is None and result.plot is None
    assert result.table["job"].tolist() == ["0", "1"]
    assert not (sweep / "sweep_compare.png").exists()


def test_compare_empty_folder_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job folders"):
        compare.run(tmp_path)


def test_objective_value_present_missing_and_not_a_number():
    metrics = {"ncf": {"test": {"test_ndcg@10": 0.25}, "best_epoch": 3}, "blend": {"serve": "x"}}
    assert objective_value(metrics, "ncf.test.test_ndcg@10") == 0.25
    assert objective_value(metrics, "ncf.best_epoch") == 3.0
    assert objective_value(metrics, None) is None
    with pytest.raises(KeyError, match=r"objective='ncf\.test\.test_ndcg@1'.*Did you mean ncf\.test\.test_ndcg@10"):  # fmt: skip
        objective_value(metrics, "ncf.test.test_ndcg@1")
    with pytest.raises(KeyError, match=r"objective='glmix\.test\.auc'"):
        objective_value(metrics, "glmix.test.auc")
    with pytest.raises(TypeError, match=r"objective='blend\.serve'.*must be a number"):
        objective_value(metrics, "blend.serve")


def test_flatten_keeps_lists_as_leaves():
    assert flatten({"a": {"b": [1, 2], "c": {}}, "d": 1}) == {"a.b": [1, 2], "a.c": {}, "d": 1}


FAST = [
    "data=synthetic_small",
    "stages.glmix=false",
    "stages.blend=false",
    "stages.export=false",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "outputs.model=false",
    "outputs.embeddings=false",
    "outputs.plots=false",
    "save_data=false",
    "threads=1",
    "ncf.refit=false",
]


def _pipeline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.pipeline", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_multirun_gives_each_job_its_own_folder_and_compare_reads_them(tmp_path):
    sweep = tmp_path / "sweep"
    out = _pipeline("-m", "ncf.model.bag_dim=16,32", *FAST, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    manifests = [json.loads((sweep / j / "run_manifest.json").read_text()) for j in ("0", "1")]
    assert [m["config"]["paths"]["output_dir"] for m in manifests] == [
        str(sweep / "0"),
        str(sweep / "1"),
    ]
    assert [m["config"]["ncf"]["model"]["bag_dim"] for m in manifests] == [16, 32]
    result = compare.main([str(sweep), "--out", str(tmp_path / "report")])
    assert result.swept_keys == ["ncf.model.bag_dim"]
    assert result.metric == "ncf.test.test_ndcg@10"
    assert (result.table["status"] == "ok").all()
    ndcg = [m["metrics"]["ncf"]["test"]["test_ndcg@10"] for m in manifests]
    assert result.table["ncf.test.test_ndcg@10"].tolist() == sorted(ndcg, reverse=True)
    assert result.plot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_optuna_example_returns_the_objective_to_the_sweeper(tmp_path):
    sweep = tmp_path / "optuna"
    out = _pipeline(
        "-m", "experiment=optuna_example", "hydra.sweeper.n_trials=2", "threads=1",
        f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"ncf.model.bag_dim", "ncf.module.lr"}
    values = [
        json.loads((sweep / j / "run_manifest.json").read_text())["metrics"]["ncf"]["valid"][
            "val_ndcg@10"
        ]
        for j in ("0", "1")
    ]
    assert results["best_value"] == pytest.approx(max(values))  # main() returned the objective
    table = compare.run(sweep, metric="ncf.valid.val_ndcg@10").table
    assert len(table) == 2 and (table["status"] == "ok").all()
