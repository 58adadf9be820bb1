"""Two-tower ensembles (`ncf.ensemble`, `ncf.ensemble_size`): the mean of the members'
scores served as one dot product, the members' seeds, the ensemble's own metrics, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from experiments.train_ncf import MEMBER_SEED_STRIDE, fit
from ncf.bags import csr_bags
from ncf.ensemble import TwoTowerEnsemble, model_from_config
from ncf.model import TwoTower
from ncf.recommender import NCFRecommender
from tests.test_ncf_train import compose_cfg, ndcg_again

N_L, N_C = 30, 12


def _members(k: int = 2, **settings) -> list[TwoTower]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(TwoTower(N_L, N_C, bag_dim=8, mlp=[6], dropout=0.0, **settings).eval())
    return out


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    history = sp.random(N_L, N_C, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    cowatch = sp.random(N_C, N_C, density=0.4, format="csr", random_state=rng, dtype=np.float32)
    return csr_bags(history), csr_bags(cowatch)


@pytest.mark.parametrize("course_bias", [False, True])
def test_the_ensemble_scores_the_mean_of_its_members_scores(course_bias):
    members = _members(3, course_bias=course_bias)
    if course_bias:  # a bias that is not zero, other per member
        for i, m in enumerate(members):
            torch.nn.init.normal_(m.course_bias, std=1.0 + i)
    ens = TwoTowerEnsemble(members).eval()
    history, cowatch = _inputs()
    lidx, cidx = torch.arange(N_L), torch.arange(N_C)
    with torch.no_grad():
        want = torch.stack(
            [m.score(m.learners(history, lidx), m.courses(cowatch, cidx)) for m in members]
        ).mean(0)  # (N_L, N_C)
        L, C = ens.learners(history, lidx), ens.courses(cowatch, cidx)
        got = ens.score(L, C)
        pairs = ens.score_pairs(L[:N_C], C)
    assert L.shape == (N_L, ens.embedding_dim + course_bias) and ens.embedding_dim == 3 * 6
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(pairs, want[torch.arange(N_C), torch.arange(N_C)])
    assert (ens.course_bias is None) == (not course_bias)


@pytest.mark.parametrize(
    "members, message",
    [
        (lambda: _members(1), "at least 2 members"),
        (lambda: [*_members(1), TwoTower(N_L, N_C, bag_dim=8, mlp=[4])], "differ.*mlp"),
        (lambda: _members(2, score="cosine"), "dot product"),
        (lambda: [*_members(1), torch.nn.Linear(2, 2)], "must be TwoTower"),
    ],
)
def test_the_ensemble_refuses_members_it_cannot_serve_as_one_dot_product(members, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TwoTowerEnsemble(members())


def test_model_from_config_rebuilds_either_kind():
    single = _members(1)[0]
    assert type(model_from_config(single.config)) is TwoTower
    again = model_from_config(TwoTowerEnsemble(_members(2)).config)
    assert isinstance(again, TwoTowerEnsemble) and len(again.members) == 2


def test_an_ensemble_of_cosine_models_is_refused_before_any_training(tmp_path):
    cfg = compose_cfg(tmp_path, "ncf.ensemble_size=2", "ncf.model.score=cosine")
    with pytest.raises(ValueError, match="ensemble_size=2 needs ncf.model.score=dot"):
        fit(cfg, out_dir=tmp_path)
    assert not (tmp_path / "members").exists()


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """`fit` with ncf.ensemble_size=2 and the default refit: (cfg, TrainedNCF)."""
    tmp_path = tmp_path_factory.mktemp("ensemble")
    cfg = compose_cfg(tmp_path, "ncf.ensemble_size=2", "trainer.max_epochs=2")
    return cfg, fit(cfg, out_dir=tmp_path / "fit")


def test_members_differ_in_their_seed_and_each_fits_in_its_own_folder(ensemble):
    cfg, trained = ensemble
    members = trained.result.extra["members"]
    assert [m["seed"] for m in members] == [cfg.seed, cfg.seed + MEMBER_SEED_STRIDE]
    model = trained.recommender.model
    assert isinstance(model, TwoTowerEnsemble) and len(model.members) == 2
    a, b = (m.state_dict() for m in model.members)
    assert all(not torch.equal(a[k], b[k]) for k in a if k.endswith("weight"))
    root = Path(cfg.paths.output_dir) / "fit" / "members"
    for i in range(2):
        assert (root / str(i) / "checkpoints" / "best.ckpt").is_file()
    assert Path(trained.result.checkpoint) == root / "0" / "checkpoints" / "best.ckpt"


def test_the_ensembles_timings_have_every_key_of_one_fits(ensemble):
    """Callers read a fit's timings by key (the synthetic benchmark's cost table read
    train_batches and crashed on an ensemble): the same keys, seconds summed over members."""
    _, trained = ensemble
    res, members = trained.result, trained.result.extra["members"]
    assert set(res.timings) == set(members[0]["timings"])
    for key in ("fit", "train_batches", "validation", "refit"):
        assert res.timings[key] == pytest.approx(sum(m["timings"][key] for m in members))


def test_the_ensembles_metrics_are_its_own_rankings(ensemble):
    """The reported test and validation NDCG@10 are those of the ensemble's rankings (the
    recommenders' embeddings over the whole catalogue), not a member's."""
    _, trained = ensemble
    rec, res = trained.recommender, trained.result
    assert rec.snapshot is trained.datamodule.test
    assert ndcg_again(rec) == pytest.approx(res.test["test_ndcg@10"], abs=1e-6)
    assert ndcg_again(trained.valid_recommender) == pytest.approx(
        res.valid["val_ndcg@10"], abs=1e-6
    )
    member_tests = [m["test"]["test_ndcg@10"] for m in res.extra["members"]]
    assert all(abs(t - res.test["test_ndcg@10"]) > 1e-9 for t in member_tests)
    assert res.extra["test_before_refit"] is not None  # the chosen members, before the refit


def test_the_ensemble_serves_the_mean_of_its_members_and_saves_and_loads(ensemble, tmp_path):
    _, trained = ensemble
    rec = trained.recommender
    one = [
        NCFRecommender(m, rec.snapshot, rec.learner_ids, rec.course_ids, inputs=rec.inputs,
                       normalize=rec.normalize, device="cpu")
        for m in rec.model.members
    ]  # fmt: skip
    learners, courses = rec.learner_ids.index[:7], rec.course_ids.index[:9]
    pairs = np.repeat(learners, len(courses)), np.tile(courses, len(learners))
    want = np.mean([r.score(*pairs) for r in one], axis=0)
    np.testing.assert_allclose(rec.score(*pairs), want, rtol=1e-5, atol=1e-6)
    path = rec.save(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    assert config["format_version"] == 3 and len(config["model"]["members"]) == 2
    loaded = NCFRecommender.load(path, device="cpu")
    assert isinstance(loaded.model, TwoTowerEnsemble)
    ids, scores = rec.recommend(learners, N=5)
    ids2, scores2 = loaded.recommend(learners, N=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)


def test_reseeded_datamodule_keeps_the_snapshots_and_draws_other_batches(ensemble):
    _, trained = ensemble
    dm = trained.datamodule
    other, same = dm.reseeded(dm.seed + 7), dm.reseeded(dm.seed)
    assert other.valid is dm.valid and other.train_snapshots == dm.train_snapshots
    assert other.teacher_choice() is dm.teacher_choice() and other.trainer is None

    def first_batch(d):
        return next(iter(d.train_dataloader()))["learners"]

    assert torch.equal(first_batch(same), first_batch(dm.reseeded(dm.seed)))
    assert not torch.equal(first_batch(other), first_batch(same))
