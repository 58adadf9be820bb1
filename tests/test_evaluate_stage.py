"""The evaluate stage end to end: the fast pipeline on the small platform with the stage on, its
figures against the model stages' own test figures, intervals, per-segment rows, then the stage
again from the run's folder (`python -m experiments.evaluate run_dir=...`), with and without
GLMix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.evaluate import METRICS
from experiments.evaluate import run as run_evaluate
from experiments.pipeline import run as run_pipeline
from tests.pipeline_fakes import FAST, compose_cfg, rerun

KS = [1, 5, 10, 20, 50]  # conf/evaluate/default.yaml


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The fast pipeline: model stages, the evaluate stage and the report (no blend, no export:
    the stage reads the model stages only)."""
    out = tmp_path_factory.mktemp("pipeline")
    cfg = compose_cfg(
        "pipeline", *FAST, "stages.blend=false", "stages.export=false", "stages.report=true",
        f"paths.output_dir={out}", "evaluate.n_boot=300", "evaluate.ci=0.9",
    )  # fmt: skip
    run_pipeline(cfg)
    return out


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_at_10_the_figures_are_the_model_stages_own_test_figures(run_dir):
    ev = _read(run_dir / "evaluation" / "metrics.json")
    ncf = _read(run_dir / "ncf" / "metrics.json")
    assert ev["settings"]["ks"] == KS and ev["skipped"] == {}
    assert sorted(ev["ncf"]["test"]) == sorted(f"{m}@{k}" for m in METRICS for k in KS)
    # Lightning logs the stage's figures as float32: equal at that precision
    for m in METRICS:
        assert np.float32(ev["ncf"]["test"][f"{m}@10"]) == np.float32(ncf["test"][f"test_{m}@10"])
    assert np.float32(ev["ncf"]["coverage"]["coverage@10"]) == np.float32(
        ncf["test"]["test_coverage@10"]
    )
    # the stage's own interval: the same learners, values, seed, replicates and level (the
    # run's evaluate settings, not defaults of its own)
    ndcg = next(r for r in ev["ncf"]["intervals"] if r["metric"] == "ndcg@10")
    own = ncf["test_ci"]["test_ndcg@10"]
    assert (ndcg["low"], ndcg["high"], ndcg["n"]) == pytest.approx(
        (own["low"], own["high"], own["n"]), abs=1e-12
    )
    glmix = _read(run_dir / "glmix" / "metrics.json")["test"]
    g = ev["glmix"]
    assert g["auc"]["mean"] == pytest.approx(glmix["auc"], abs=1e-12)
    assert g["log_loss"] == pytest.approx(glmix["log_loss"], abs=1e-12)
    assert g["per_learner_auc"]["mean"] == pytest.approx(glmix["per_entity_auc_mean"], abs=1e-12)
    assert (g["rows"], g["positives"]) == (glmix["rows"], glmix["positives"])
    # more room at K: recall and HR never fall as K grows
    for m in ("recall", "hr"):
        values = [ev["ncf"]["test"][f"{m}@{k}"] for k in KS]
        assert values == sorted(values) and values[-1] > values[0]


def test_every_interval_contains_its_mean(run_dir):
    ev = _read(run_dir / "evaluation" / "metrics.json")
    rows = ev["ncf"]["intervals"]
    assert len(rows) == len(METRICS) * len(KS)
    for r in rows:
        assert r["low"] <= r["mean"] <= r["high"], r["metric"]
        assert r["n"] == ev["ncf"]["learners"]
    assert all(r["low"] < r["high"] for r in rows if r["k"] >= 5)  # not a degenerate interval
    for r in ev["ncf"]["by_segment"]:
        assert r["low"] <= r["mean"] <= r["high"], (r["metric"], r["segment"])
    g = ev["glmix"]
    for part in (g["auc"], g["per_learner_auc"]):
        assert part["low"] < part["mean"] < part["high"]
    assert g["auc"]["n"] == g["learners"] > 10


def test_per_segment_rows_cover_every_segment_and_add_up(run_dir):
    ev = _read(run_dir / "evaluation" / "metrics.json")
    per = pd.read_parquet(run_dir / "evaluation" / "ncf_per_learner.parquet")
    assert per["learner_id"].is_unique and len(per) == ev["ncf"]["learners"]
    learners = pd.read_parquet(run_dir / "eventlog" / "learners.parquet")
    truth = learners.set_index("learner_id")["segment"].astype(str)
    assert (per["segment"].astype(str).to_numpy() == truth[per["learner_id"]].to_numpy()).all()
    seg = pd.DataFrame(ev["ncf"]["by_segment"])
    assert set(seg["metric"]) == {f"{m}@{k}" for m in METRICS for k in KS}
    for metric, rows in seg.groupby("metric"):
        assert set(rows["segment"]) == set(per["segment"])  # every segment, each once
        assert rows["users"].sum() == len(per)
        # the per-segment means weighted by their learners give the overall mean
        overall = (rows["mean"] * rows["users"]).sum() / rows["users"].sum()
        assert overall == pytest.approx(ev["ncf"]["test"][metric], abs=1e-12)
        assert overall == pytest.approx(per[metric].mean(), abs=1e-12)
    assert per["segment"].nunique() > 1
    glmix = pd.read_parquet(run_dir / "evaluation" / "glmix_per_learner.parquet")
    assert glmix["auc"].mean() == pytest.approx(ev["glmix"]["per_learner_auc"]["mean"])


def test_the_pipeline_records_the_stage_and_reports_it(run_dir):
    record = _read(run_dir / "evaluation" / "stage.json")
    assert record["status"] == "done" and set(record["upstream"]) == {"ncf", "glmix"}
    html = (run_dir / "report.html").read_text()
    section = html[html.index('id="evaluation"') :]
    assert "Two-tower, test fold" in section and "per learner segment" in section
    assert "GLMix, test impressions" in section


def test_the_entry_point_evaluates_a_run_folder_with_its_own_settings(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "evaluation")
    res = rerun(
        run_evaluate, "evaluate", f"run_dir={copy}", "evaluate.ks=[10,3]", "evaluate.n_boot=200",
        "evaluate.segment_column=null",
    )  # fmt: skip
    written = _read(copy / "evaluation" / "metrics.json")
    assert written["ncf"]["test"] == res["ncf"]["test"]
    assert sorted(written["ncf"]["test"]) == sorted(f"{m}@{k}" for m in METRICS for k in (3, 10))
    first = _read(run_dir / "evaluation" / "metrics.json")
    for m in METRICS:  # the same models and data: the same figures
        assert written["ncf"]["test"][f"{m}@10"] == first["ncf"]["test"][f"{m}@10"]
    assert written["glmix"]["auc"]["mean"] == first["glmix"]["auc"]["mean"]
    assert written["ncf"]["by_segment"] == [] and written["settings"]["n_boot"] == 200
    assert "segment" not in pd.read_parquet(copy / "evaluation" / "ncf_per_learner.parquet")


def test_a_ci_change_from_the_run_folder_redraws_the_two_tower_intervals(run_dir, tmp_path):
    """evaluate.ci changed in run_dir mode: the two-tower's own test band (ncf/metrics.json,
    what the summary shows) is drawn again as the evaluation draws NDCG@10's, untrained."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    before = _read(copy / "ncf" / "metrics.json")["test_ci"]["test_ndcg@10"]
    rerun(run_evaluate, "evaluate", f"run_dir={copy}", "evaluate.ci=0.5")
    rows = _read(copy / "evaluation" / "metrics.json")["ncf"]["intervals"]
    at10 = next(r for r in rows if r["name"] == "ndcg" and r["k"] == 10)
    after = _read(copy / "ncf" / "metrics.json")["test_ci"]["test_ndcg@10"]
    assert (after["low"], after["high"]) == pytest.approx((at10["low"], at10["high"]))
    assert before["low"] < after["low"] <= after["high"] < before["high"]
    assert _read(copy / "ncf" / "stage.json") == _read(run_dir / "ncf" / "stage.json")


def test_a_run_folder_without_glmix_evaluates_the_two_tower_only(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "glmix")
    shutil.rmtree(copy / "evaluation")
    res = rerun(run_evaluate, "evaluate", f"run_dir={copy}", "evaluate.n_boot=100", "threads=1")
    assert "glmix" not in res and set(res["skipped"]) == {"glmix"}
    assert sorted(p.name for p in (copy / "evaluation").iterdir()) == [
        "metrics.json", "ncf_per_learner.parquet", "stage.json",  # the stage's record, as run
    ]  # fmt: skip
    first = _read(run_dir / "evaluation" / "metrics.json")
    assert res["ncf"]["test"] == pytest.approx(first["ncf"]["test"])


def test_bad_settings_name_the_key(tmp_path):
    from experiments.evaluate import evaluate_run

    for override, key in (("evaluate.ks=[0,10]", "evaluate.ks"), ("evaluate.ci=1.5", "evaluate.ci"),
                          ("evaluate.n_boot=0", "evaluate.n_boot")):  # fmt: skip
        cfg = compose_cfg("pipeline", override)
        with pytest.raises(ValueError, match=key):
            evaluate_run(cfg, None, tmp_path)
