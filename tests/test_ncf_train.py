"""Training end to end (experiments.train_ncf.run on the small platform) and the recommender
built from it: ids, exclusion, candidates, cold start, save/load, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pytorch_lightning.callbacks import EMAWeightAveraging

from evaluation import evaluate_full_ranking
from experiments.train_ncf import fit, run
from ncf.recommender import NCFRecommender
from watchlog.idmap import UnknownIdError

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train_ncf",
            overrides=[
                "data=synthetic_small", f"paths.output_dir={tmp_path}", "trainer.max_epochs=3",
                "trainer.enable_progress_bar=false", "outputs.plots=false", *overrides,
            ],
        )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ncf")
    metrics = run(compose_cfg(out))
    return out, metrics


def test_run_writes_metrics_model_embeddings_and_manifest(trained):
    out, metrics = trained
    saved = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert 0 <= saved["best_epoch"] < saved["epochs_run"] <= 3
    assert saved["test"]["test_ndcg@10"] == pytest.approx(metrics["test"]["test_ndcg@10"])
    assert 0 < metrics["test"]["test_ndcg@10"] <= 1
    assert set(metrics["snapshots"]) == {
        "train_0",
        "train_1",
        "train_2",
        "train_3",
        "valid",
        "test",
    }
    assert (
        manifest["config"]["ncf"]["name"] == "two_tower" and len(manifest["data_fingerprint"]) == 64
    )
    assert metrics["timings"]["validation"] < metrics["timings"]["train_batches"]
    courses = pd.read_parquet(out / "embeddings" / "courses.parquet")
    # 128 dims + the course-bias column (learners carry a 1 there): dot product = model score
    assert len(courses) == 120 and len(courses["embedding"].iloc[0]) == 129
    learners = pd.read_parquet(out / "embeddings" / "learners.parquet")
    assert len(learners) == 500 and (np.stack(learners["embedding"])[:, -1] == 1).all()
    assert (out / "logs" / "metrics.csv").exists() and (out / "model" / "weights.pt").exists()
    # the saved folder carries the input settings, so it can be served at later cutoffs
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["format_version"] == 3
    wanted = {k: v for k, v in manifest["config"]["ncf"]["inputs"].items() if k != "_target_"}
    assert config["inputs"] == wanted and config["model_cutoff"] == config["cutoff"]


def test_same_seed_same_result(tmp_path, trained):
    _, first = trained
    again = run(compose_cfg(tmp_path, "outputs.model=false", "outputs.embeddings=false"))
    assert again["valid"] == first["valid"] and again["test"] == first["test"]


@pytest.fixture(scope="module")
def rec(trained):
    return NCFRecommender.load(trained[0] / "model", device="cpu")


def test_recommend_speaks_caller_ids_and_filters_watched(rec):
    learners = rec.learner_ids.index[:20].tolist()
    ids, scores = rec.recommend(learners, N=10)
    assert ids.shape == scores.shape == (20, 10)
    assert set(ids.ravel()) <= set(rec.course_ids.index)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    seen = rec.snapshot.seen[rec.learner_ids.to_index(learners)]
    for row, lid in enumerate(ids):  # a handful of learners: checking each list is the point
        watched = set(rec.course_ids.to_ids(seen[row].indices))
        assert not watched & set(lid)
    ids_all, _ = rec.recommend(learners, N=10, filter_already_watched=False)
    assert ids_all.shape == (20, 10)


def test_recommend_candidates_and_padding(rec):
    cands = rec.course_ids.index[:5].tolist()
    learner = rec.learner_ids.index[:3].tolist()
    ids, scores = rec.recommend(learner, N=8, candidates=cands, filter_already_watched=False)
    assert ids.dtype == object and (ids[:, 5:] == None).all()  # noqa: E711
    assert np.isneginf(scores[:, 5:]).all() and set(ids[:, :5].ravel()) == set(cands)


def test_unknown_learners_error_or_cold_start(rec, trained):
    with pytest.raises(UnknownIdError, match="1 of 2 ids are unknown"):
        rec.recommend([rec.learner_ids.index[0], "nobody"], N=5)
    cold = NCFRecommender.load(trained[0] / "model", device="cpu")
    cold.cold_start = "empty_history"
    ids, _ = cold.recommend(["nobody", "nobody-2"], N=5)
    assert (ids[0] == ids[1]).all()  # an empty history: one list for every such learner
    empty = np.flatnonzero(np.diff(rec.snapshot.history.indptr) == 0)
    no_seen = [i for i in empty if rec.snapshot.seen[i].nnz == 0]
    if no_seen:  # a known learner with nothing watched gets the same list
        known, _ = cold.recommend(rec.learner_ids.to_ids([no_seen[0]]), N=5)
        assert (known[0] == ids[0]).all()


def test_save_load_round_trip_gives_identical_scores(rec, tmp_path):
    learners = rec.learner_ids.index[:50].tolist()
    before = rec.recommend(learners, N=10)
    rec.save(tmp_path / "again")
    after = NCFRecommender.load(tmp_path / "again", device="cpu").recommend(learners, N=10)
    assert (before[0] == after[0]).all()
    np.testing.assert_allclose(before[1], after[1], rtol=1e-6)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported"):
        torch.save({"x": object()}, tmp_path / "again" / "weights.pt")
        NCFRecommender.load(tmp_path / "again")


def test_similar_courses_excludes_the_course_itself(rec):
    cid = rec.course_ids.index[:4].tolist()
    ids, scores = rec.similar_courses(cid, N=10)
    assert ids.shape == (4, 10)
    assert all(c not in row for c, row in zip(cid, ids, strict=True))
    assert (scores <= 1 + 1e-5).all()


@pytest.mark.parametrize(
    "overrides",
    [
        ("ncf=two_tower_plus",),  # attention pooling, content features, course IDs
        ("ncf=mf",),  # ID-only matrix factorization through the same code
        (
            "ncf.module.loss=bce",
            "ncf.module.negative_alpha=0.75",
            "ncf.inputs.label_weighting=log_watch",
        ),
        ("ncf.module.loss=sampled_softmax", "ncf.module.extra_negatives=20"),
        ("ncf.datamodule.training=rolling+denoising", "ncf.inputs.weighting=recency"),
        ("ncf.datamodule.teacher_l2=50", "ncf.module.distill_weight=0.5"),  # EASE teacher
        (
            "ncf.datamodule.teacher_l2=50",
            "ncf.module.distill_weight=0.5",
            "ncf.module.distill_inputs=both",
            "ncf.module.distill_standardize=true",
            "ncf.module.distill_temperature=1.0",
            "ncf.module.lr_decay_epochs=3",
        ),  # fmt: skip
    ],
)
def test_model_variants_and_losses_train(tmp_path, overrides):
    metrics = run(
        compose_cfg(
            tmp_path, "trainer.max_epochs=1", "ncf.refit=false", "outputs.model=false",
            "outputs.embeddings=false", *overrides,
        )
    )  # fmt: skip
    assert 0 < metrics["test"]["test_ndcg@10"] <= 1
    assert metrics["valid"]["val_recall@10"] >= 0


def test_distillation_without_a_teacher_is_an_error(tmp_path):
    cfg = compose_cfg(tmp_path, "ncf.refit=false", "ncf.datamodule.teacher_l2=null")
    with pytest.raises(ValueError, match="teacher_l2"):
        fit(cfg, out_dir=tmp_path / "fit")


@pytest.fixture(scope="module")
def refitted(tmp_path_factory):
    """`fit` with the default refit: (cfg, TrainedNCF)."""
    tmp_path = tmp_path_factory.mktemp("refit")
    cfg = compose_cfg(tmp_path, "outputs.model=false", "outputs.embeddings=false")
    return cfg, fit(cfg, out_dir=tmp_path / "fit")


def test_a_refit_also_tests_the_model_chosen_before_it(refitted):
    """result.extra["test_before_refit"]: the chosen model's test metrics before the refit
    replaced it (what benchmarks.bench_ncf_refit compares, one window earlier)."""
    _, trained = refitted
    before, after = trained.result.extra["test_before_refit"], trained.result.test
    assert set(before) == set(after) and "test_ndcg@10" in before
    assert before != after  # other weights: the refit trained again on more data


def test_fit_returns_the_per_user_test_metrics_of_the_tested_model(refitted):
    """result.test_per_user: one entry per learner with test labels (users = learner rows),
    their mean is the reported test figure, and they are the metrics of ranking the
    recommender's own embeddings (the refitted model's), as a paired test needs."""
    _, trained = refitted
    res, test, rec = trained.result, trained.datamodule.test, trained.recommender
    per_user = res.test_per_user
    np.testing.assert_array_equal(per_user.users, np.flatnonzero(np.diff(test.labels.indptr)))
    assert per_user.summary()["ndcg@10"] == pytest.approx(res.test["test_ndcg@10"], abs=1e-6)
    learners = rec.learner_embeddings_at(np.arange(len(rec.learner_ids)))  # (n_learners, d)
    courses = rec.course_embeddings()  # (n_courses, d)
    again = evaluate_full_ranking(
        lambda idx: rec.model.score(learners[torch.from_numpy(idx)], courses),
        test.labels, exclude=test.seen,
    )  # fmt: skip
    np.testing.assert_array_equal(again.users, per_user.users)
    np.testing.assert_allclose(per_user.per_user["ndcg@10"], again.per_user["ndcg@10"], atol=1e-6)


def test_valid_recommender_is_the_model_chosen_on_validation_before_the_refit(refitted):
    """TrainedNCF.valid_recommender: the best checkpoint's weights (not the refitted ones),
    serving the validation snapshot; ranking with it reproduces the reported validation
    metrics, which are those of the model chosen before the refit."""
    _, trained = refitted
    valid, res = trained.valid_recommender, trained.result
    assert valid.snapshot is trained.datamodule.valid and valid.inputs is trained.datamodule.inputs
    assert trained.recommender.inputs is trained.datamodule.inputs
    assert valid.model is not trained.recommender.model
    best = torch.load(res.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    mine, refit = valid.model.state_dict(), trained.recommender.model.state_dict()
    for name, weights in mine.items():
        torch.testing.assert_close(weights.cpu(), best[f"model.{name}"], msg=name)
    assert any(not torch.equal(mine[k].cpu(), refit[k].cpu()) for k in mine)  # refit moved on
    assert ndcg_again(valid) == pytest.approx(res.valid["val_ndcg@10"], abs=1e-6)


def ndcg_again(rec) -> float:
    """NDCG@10 of `rec` ranking the whole catalogue with its own embeddings against its
    snapshot's labels: what the fit reported as val_ndcg@10 for a recommender serving the
    validation snapshot (test_ndcg@10 for one serving the test snapshot)."""
    learners = rec.learner_embeddings_at(np.arange(len(rec.learner_ids)))
    courses = rec.course_embeddings()
    again = evaluate_full_ranking(
        lambda idx: rec.model.score(learners[torch.from_numpy(idx)], courses),
        rec.snapshot.labels, exclude=rec.snapshot.seen,
    )  # fmt: skip
    return again.summary()["ndcg@10"]


def test_refit_is_the_initial_weights_trained_for_the_chosen_epochs_from_the_seed(refitted):
    """The refit equals a fresh run: same initial weights, reseeded, best_epoch + 1 epochs on
    the refit data. Before the reseed its dropout draws depended on how long the first fit
    (and its early stopping) ran, so changing patience changed the refitted model. With
    weight averaging (the default's ncf.ema_decay) the refit averages as a fresh fit does."""
    cfg, trained = refitted
    assert cfg.ncf.refit and trained.result.epochs_run == 3  # the first fit ran 3 epochs

    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as `fit` does: same init
    dm = instantiate(cfg.ncf.datamodule, _convert_="all")(
        trained.data.log, trained.data.split, instantiate(cfg.ncf.inputs, _convert_="all")
    )
    model = instantiate(cfg.ncf.model, _convert_="all")(
        trained.data.log.n_learners, trained.data.log.n_courses
    )
    module = instantiate(cfg.ncf.module, _convert_="all")(
        model, course_popularity=dm.course_popularity()
    )
    pl.seed_everything(module.seed, workers=True, verbose=False)
    averaging = [] if cfg.ncf.ema_decay is None else [EMAWeightAveraging(decay=cfg.ncf.ema_decay)]
    on_cuda = next(trained.recommender.model.parameters()).is_cuda  # where `fit` trained
    pl.Trainer(
        accelerator="gpu" if on_cuda else "cpu", max_epochs=trained.result.best_epoch + 1,
        limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=averaging,
    ).fit(module, datamodule=dm.for_refit())  # fmt: skip
    refitted = trained.recommender.model.state_dict()
    # CUDA training is not bit-reproducible (atomic adds in the embedding bags' backward):
    # the same run to 1e-3, far closer than another seed or epoch count would come
    tol = {"rtol": 1e-3, "atol": 1e-4} if on_cuda else {}
    for name, weights in model.state_dict().items():
        torch.testing.assert_close(refitted[name].cpu(), weights.cpu(), msg=name, **tol)


def test_mf_learner_id_rows_without_training_data_are_zero_in_both_recommenders(tmp_path):
    """The MF baseline (both towers pure IDs) with the default refit: the ID rows of learners
    without a training row are zero in the tested (refitted) model and in the model chosen on
    validation (`valid_recommender`, the best checkpoint), and the latter reproduces the
    reported validation metrics: they were computed on the zeroed weights too."""
    cfg = compose_cfg(tmp_path, "ncf=mf", "outputs.model=false", "outputs.embeddings=false")
    trained = fit(cfg, out_dir=tmp_path / "fit")
    dm, res = trained.datamodule, trained.result
    assert cfg.ncf.refit
    refit_untrained, untrained = ~dm.for_refit().trained_learners(), ~dm.trained_learners()
    assert res.extra["untrained_learner_id_rows"] == int(refit_untrained.sum())
    assert res.extra["untrained_learner_id_rows_before_refit"] == int(untrained.sum())
    for rec, rows in (
        (trained.recommender, refit_untrained),
        (trained.valid_recommender, untrained),
    ):
        norms = rec.model.learner_tower.ids.weight.detach().cpu().norm(dim=1).numpy()
        assert rows.any() and (norms[rows] == 0).all() and (norms[~rows] > 0).all()
        cold = rec.learner_embeddings_at(np.flatnonzero(rows)[:1])  # no bag, zero ID row
        torch.testing.assert_close(cold, rec.learner_embeddings_at(np.array([-1])))
    valid = trained.valid_recommender
    assert ndcg_again(valid) == pytest.approx(res.valid["val_ndcg@10"], abs=1e-6)
