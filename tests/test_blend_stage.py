"""The blend and export stages end to end: the pipeline on the small platform, then each stage
again from the run's folder (`python -m experiments.blend / .export run_dir=...`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from experiments.pipeline import run as run_pipeline
from tests.pipeline_fakes import FAST, compose_cfg, rerun

# both rank objectives reach the fits (one temperature, to keep the run short)
RANK_GRID = ["blend.variants.rank.tau=[0.3]", "blend.variants.rank.objective=[mean_rank,ndcg]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline")
    cfg = compose_cfg(
        "pipeline",
        *FAST,
        *RANK_GRID,
        f"paths.output_dir={out}",
        f"export.sink.path={out / 'lists'}",
    )
    run_pipeline(cfg)
    return out


def test_the_pipeline_blends_judges_and_publishes(run_dir):
    m = json.loads((run_dir / "blend" / "metrics.json").read_text())
    systems = {r["system"] for r in m["test"]}
    assert {"two_tower", "glmix", "fixed", "rrf", "logistic", "rank", "personalized", "oracle"} <= (
        systems
    )
    assert any(s.startswith("served (personalized") for s in systems)
    kinds = {r["kind"] for r in m["validation"]}
    assert kinds == {"fixed", "rrf", "logistic", "rank", "personalized"}
    # the item-item (EASE) feature was on the candidates and every blender read it
    assert "ease_z" in m["features"] and "ease_z" in m["coefficients"]["rank"]
    # both normalizations of the two-tower score were tried, and one was chosen per kind
    assert {r["variant"].split(",")[0] for r in m["validation"] if r["kind"] == "logistic"} == {
        "zscore", "log_softmax",
    }  # fmt: skip
    assert m["chosen"]["personalized"]["settings"]["normalization"] in ("zscore", "log_softmax")
    rank_variants = {r["variant"] for r in m["validation"] if r["kind"] == "rank"}
    assert rank_variants == {
        f"{norm}, tau=0.3, objective={o}"
        for norm in ("zscore", "log_softmax")
        for o in ("mean_rank", "ndcg")
    }
    ndcg = {r["system"]: r["ndcg@10"] for r in m["test"]}
    # the true affinity: far above the models (seeded data, so a fixed outcome)
    assert ndcg["oracle (whole catalogue)"] > ndcg["oracle"] > ndcg["two_tower"] + 0.1
    t = m["tournaments"]["personalized vs two_tower"]
    assert t["n_boot"] == 500 and t["low"] <= t["mean_diff"] <= t["high"]
    # current (fixed) weights against the weights replay proposes, on test
    duel = m["tournaments"]["replay-tuned vs fixed weights"]
    assert duel["n"] == next(r["learners"] for r in m["test"] if r["system"] == "fixed")
    assert "replay-tuned (gradient, mean rank)" in ndcg
    runs = m["replay"]["runs"]
    assert {(r["objective"], r["method"]) for r in runs} == {
        (o, me) for o in ("mean_rank", "expected_clicks") for me in ("gradient", "nelder_mead")
    }
    assert m["replay"]["curve"]["source"] == "impressions"  # the platform logs positions
    fixed_norm = m["chosen"]["fixed"]["settings"]["normalization"]
    assert (
        m["replay"]["features"][0]
        == {"zscore": "ncf_z", "log_softmax": "ncf_log_softmax"}[fixed_norm]
    )


def test_blend_models_see_nothing_from_the_blend_window_on(run_dir):
    from glmix import GLMixScorer
    from ncf import NCFRecommender

    m = json.loads((run_dir / "blend" / "metrics.json").read_text())
    blend_start = pd.Timestamp(m["windows"]["blend"])
    rec = NCFRecommender.load(run_dir / "blend_models" / "ncf" / "model")
    assert rec.model_cutoff == blend_start == rec.snapshot.cutoff
    final = NCFRecommender.load(run_dir / "ncf" / "model")
    assert final.model_cutoff == pd.Timestamp(m["windows"]["test"])
    GLMixScorer.load(run_dir / "blend_models" / "glmix" / "model")  # a scorer folder


def test_served_lists_cover_every_learner_with_k_rows_and_a_source(run_dir):
    lists = pq.read_table(run_dir / "blend" / "ranked_lists.parquet").to_pandas()
    n = lists.groupby("learner_id", sort=False).size()
    assert len(n) == 500 and (n == 10).all()
    assert set(lists["source"]) <= {"blend", "two_tower", "popular_segment", "popular_global"}
    assert (lists.groupby("learner_id")["score"].diff().dropna() <= 0).all()
    m = json.loads((run_dir / "blend" / "metrics.json").read_text())
    assert sum(m["ranked_lists"]["learners_by_first_source"].values()) == 500
    # the final two-tower knows every course, so no popular course left the fallback lists
    # (a newer course's count: tests/test_ncf_serving.py)
    assert m["ranked_lists"]["fallback_courses_unscorable"] == 0


def test_the_published_version_is_the_served_lists_with_a_model_version(run_dir):
    from export import current_version, read_version

    exp = json.loads((run_dir / "export.json").read_text())
    assert exp["published"] and exp["rows"] == 5000
    assert all(g["passed"] is not False for g in exp["gates"])
    root = run_dir / "lists"
    assert current_version(root).name == exp["version"]
    published = read_version(current_version(root)).to_pandas()
    served = pq.read_table(run_dir / "blend" / "ranked_lists.parquet").to_pandas()
    assert len(published) == len(served)
    assert (published["model_version"] == exp["model_version"]).all()
    np.testing.assert_array_equal(
        published["course_id"].astype(str), served["course_id"].astype(str)
    )


def test_each_stage_runs_again_from_the_run_folder(run_dir, tmp_path):
    from experiments.blend import run as run_blend
    from experiments.export import run as run_export
    from export import GateError, current_version

    before = json.loads((run_dir / "blend" / "metrics.json").read_text())
    blend_overrides = [o for o in [*FAST, *RANK_GRID] if o.startswith("blend.")]
    # reuse=false: the settings are the run's, so the stage would be reused as it is
    again = rerun(run_blend, "blend", f"run_dir={run_dir}", "threads=1", "reuse=false",
                  *blend_overrides)  # fmt: skip
    # same data, models, config and seed: the same choice and the same test figures
    assert [r["variant"] for r in again["validation"]] == [
        r["variant"] for r in before["validation"]
    ]
    first = {r["system"]: r["ndcg@10"] for r in before["test"]}
    second = {r["system"]: r["ndcg@10"] for r in again["test"]}
    # the platform's truth is read back from the folder (eventlog/truth.npz): both oracle
    # rows, with the same figures
    assert {"oracle", "oracle (whole catalogue)"} <= set(second)
    assert second == pytest.approx(first)
    db = tmp_path / "lists.db"
    res = rerun(
        run_export, "export", f"run_dir={run_dir}", "export.sink.kind=sqlite",
        f"export.sink.path={db}", "threads=1",  # every command takes threads=N
    )  # fmt: skip
    # the run's gates (k = its served length, its coverage) and the sink given; recorded
    assert json.loads((run_dir / "export_stage.json").read_text())["status"] == "done"
    assert OmegaConf.load(run_dir / "resolved_config.yaml").export.sink.path == str(db)
    assert res["published"] and res["rows"] == 5000
    with pytest.raises(GateError, match="complete_lists"):  # another k: the lists are short
        rerun(run_export, "export", f"run_dir={run_dir}", "export.sink.kind=sqlite",
              f"export.sink.path={db}", "export.gates.k=11")  # fmt: skip
    # a gate that cannot pass: nothing is published, the current version stays
    # the run's settings are now the sqlite export's (resolved_config.yaml): kind given again
    strict = (
        "export", f"run_dir={run_dir}", "export.sink.kind=parquet",
        f"export.sink.path={run_dir / 'lists'}", "export.gates.min_coverage=1.0",
    )  # fmt: skip
    current = current_version(run_dir / "lists")
    with pytest.raises(GateError, match="coverage"):
        rerun(run_export, *strict)
    assert current_version(run_dir / "lists") == current
    assert json.loads((run_dir / "export.json").read_text())["published"] is False


def test_a_split_without_blend_window_fits_on_validation_then_keeps_the_blender(tmp_path):
    """Stratified split (no time): the blender is fitted on the validation part with the
    models chosen before the refit, settings chosen on the mean over three random divisions
    of its labels. Without GLMix (the platform's stratified split keeps watched events only,
    so every impression row is a click) the blend goes on without its columns, and says so."""
    fast = [o for o in FAST if not o.startswith("split.")]
    cfg = compose_cfg(
        "pipeline", *fast, "split=stratified", "ncf.refit=true", "stages.glmix=false",
        "stages.export=false", "blend.holdout_draws=3", f"paths.output_dir={tmp_path}",
    )  # fmt: skip
    metrics = run_pipeline(cfg)
    assert (tmp_path / "ncf" / "model_before_refit").exists()
    assert not (tmp_path / "blend_models").exists()
    m = json.loads((tmp_path / "blend" / "metrics.json").read_text())
    assert "blend" not in m["windows"]
    assert m["validation_draws"] == 3
    assert all(r["draws"] == 3 and r["ndcg@10_sd"] >= 0 for r in m["validation"])
    assert any(r["ndcg@10_sd"] > 0 for r in m["validation"])  # the draws differ
    assert "means over 3 random divisions" in (tmp_path / "report.html").read_text()
    lead = m["serve_margin"]  # the serving kind against the best other kind, draw by draw
    assert lead["kind"] == m["serve"] and lead["runner_up"] != m["serve"]
    assert lead["draws"] == 3 and 0 <= lead["draws_ahead"] <= 3
    rival = next(r for r in m["validation"] if r["kind"] == lead["runner_up"])
    mine = m["chosen"][m["serve"]]
    assert lead["ndcg@10_diff"] == pytest.approx(mine["ndcg@10"] - rival["ndcg@10"])
    assert m["features_absent"] == ["glmix_global", "glmix_per_learner", "glmix_per_course"]
    assert "rrf" not in m["chosen"]  # its columns (ncf_score, glmix_logit) are not all there
    assert {r["system"] for r in metrics["blend"]["test"]} >= {"two_tower", "personalized"}
    assert "glmix" not in {r["system"] for r in metrics["blend"]["test"]}
    lists = pq.read_table(tmp_path / "blend" / "ranked_lists.parquet").to_pandas()
    assert "two_tower" not in set(lists["source"])  # without GLMix every known learner blends


def test_without_refit_or_blend_window_the_blender_sees_the_validation_snapshot(tmp_path):
    """ncf.refit=false, no blend window: the blender is fitted on validation with the
    two-tower serving the validation snapshot (saved beside model/); the final model serves
    the test snapshot, whose inputs hold the validation watches, and was trained on them: it
    is refused there."""
    from blend import CandidateBuilder
    from experiments.blend import Models, labelled_point
    from experiments.data import load_run

    fast = [o for o in FAST if o != "split.fn.blend_days=20"]
    cfg = compose_cfg(
        "pipeline", *fast, "split.fn.blend_days=0", "ncf.refit=false", "stages.export=false",
        "stages.evaluate=false", "stages.report=false", f"paths.output_dir={tmp_path}",
    )  # fmt: skip
    run_pipeline(cfg)
    early = Models.load_early(tmp_path)
    _, data = load_run(tmp_path)
    assert data.split.blend is None
    assert early.ncf.snapshot.cutoff == data.split.valid.cutoff
    point = labelled_point(
        CandidateBuilder(n_retrieve=40), data.log, data.split.valid, early, "binary"
    )
    assert point.labels.sum() > 0  # the validation positives are among the candidates
    final = Models.load(tmp_path)
    from watchlog.splits import LeakageError

    # trained through the test cutoff: refused for what it learned, before its snapshot
    with pytest.raises(
        LeakageError, match=r"blend: the two-tower scoring the valid window was trained on events"
    ):
        labelled_point(CandidateBuilder(n_retrieve=40), data.log, data.split.valid, final, "binary")


def test_serve_best_serves_the_kind_best_on_validation_and_item_item_can_be_off(
    run_dir, monkeypatch, caplog
):
    import experiments.blend as blend_stage
    from experiments.blend import run as run_blend

    seen_by_curve = []  # the replay curve's impressions: strictly before the blend window
    fit_curve = blend_stage.PositionCurve.from_impressions
    monkeypatch.setattr(
        blend_stage.PositionCurve, "from_impressions",
        lambda events, **kw: seen_by_curve.append(events["ts"].max()) or fit_curve(events, **kw),
    )  # fmt: skip
    m = rerun(
        run_blend, "blend", f"run_dir={run_dir}", *[o for o in FAST if o.startswith("blend.")],
        "blend.serve=best", "blend.candidates.item_item=null", "blend.normalizations=[log_softmax]",
        "blend.holdout_draws=2",  # no effect with a blend window, and said so
    )  # fmt: skip
    assert m["validation_draws"] == 1 and "draws" not in m["validation"][0]
    assert "holdout_draws=2 has no effect" in caplog.text
    # replay tunes the two-tower column of the normalization validation chose (the only one)
    assert m["replay"]["features"][0] == "ncf_log_softmax"
    best_kind = m["validation"][0]["kind"]  # best first
    assert m["serve"] == best_kind
    assert any(r["system"].startswith(f"served ({best_kind} +") for r in m["test"])
    # without the item-item scorer the feature is absent, and said so
    assert "ease_z" not in m["features"] and "ease_z" in m["features_absent"]
    assert all("ease_z" not in c for c in m["coefficients"].values())
    assert len(seen_by_curve) == 1 and seen_by_curve[0] < pd.Timestamp(m["windows"]["blend"])
