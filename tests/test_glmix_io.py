"""Save / load: identical predictions, ids and names travel, no pickle, atomic replace."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glmix import FixedEffect, GLMix, RandomEffect, load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def fitted(seed=0, learner_ids=None):
    rng = np.random.default_rng(seed)
    n = 1500
    li, ci = rng.integers(0, 50, n), rng.integers(0, 20, n)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0] - 0.3 * (li % 3)))).astype(float)
    designs = {"global": X, "per_learner": X[:, :2], "per_course": X[:, 1:]}
    keys = {"learner": li if learner_ids is None else learner_ids[li], "course": ci}
    m = GLMix(
        fixed=FixedEffect(l2=1.0, variances=True),
        random={
            "per_learner": RandomEffect(key="learner", l2=3.0, intercept_l2=1.0, variances=True),
            "per_course": RandomEffect(key="course", l2=3.0, min_rows=40),
        },
        passes=2,
    ).fit(designs, keys, y, validation=(designs, keys, y))
    return m, designs, keys


@pytest.mark.parametrize("ids", [None, "str", "float"])
def test_round_trip_gives_identical_predictions(tmp_path, ids):
    learner_ids = {
        None: None,
        "str": np.array([f"user-{i}" for i in range(50)]),
        "float": np.arange(50) + 0.5,
    }[ids]
    m, designs, keys = fitted(learner_ids=learner_ids)
    m.save(tmp_path / "model")
    m2 = GLMix.load(tmp_path / "model")
    np.testing.assert_array_equal(m2.predict_logit(designs, keys), m.predict_logit(designs, keys))
    for name, c in m.coordinates_.items():
        c2 = m2.coordinates_[name]
        assert c2.get_params() == c.get_params() and c2.feature_names_ == c.feature_names_
        np.testing.assert_array_equal(c2.coef_, c.coef_)
        assert (c2.coef_var_ is None) == (c.coef_var_ is None)
        assert c2.penalty() == pytest.approx(c.penalty(), rel=1e-12)
    assert m2.coordinates_["per_learner"].ids_ == m.coordinates_["per_learner"].ids_
    assert m2.history_ == json.loads(json.dumps(m2.history_)) and len(m2.history_) == 6
    assert m2.best_ == m.best_ and m2.best_valid_ == m.best_valid_
    # a loaded model works as a prior for incremental training
    m3 = GLMix(
        fixed=FixedEffect(),
        random={
            "per_learner": RandomEffect(key="learner"),
            "per_course": RandomEffect(key="course"),
        },
    )
    m3.fit(designs, keys, (m.predict_logit(designs, keys) > 0).astype(float), prior=m2)


def test_files_are_npz_and_json_without_pickle(tmp_path):
    m, _, _ = fitted(seed=1)
    path = m.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "model.json"]
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        assert "per_learner.ids" in z.files and z["per_learner.coef"].shape == (50, 3)
    meta = json.loads((path / "model.json").read_text())
    assert meta["coordinates"]["per_course"]["feature_names_"] == ["x0", "x1", "intercept"]


def test_save_replaces_atomically_and_rejects_unportable_ids(tmp_path):
    m1, designs, keys = fitted(seed=2)
    m2, _, _ = fitted(seed=3)
    m1.save(tmp_path / "model")
    m2.save(tmp_path / "model")  # replaces the old directory whole
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    loaded = load_model(tmp_path / "model")
    np.testing.assert_array_equal(
        loaded.predict_logit(designs, keys), m2.predict_logit(designs, keys)
    )
    odd = np.empty(50, dtype=object)
    odd[:] = [(i, "x") for i in range(50)]  # tuple ids: no portable representation
    m3, _, _ = fitted(seed=4, learner_ids=odd)
    with pytest.raises(TypeError, match="per_learner.*tuple"):
        m3.save(tmp_path / "odd")
    assert not (tmp_path / "odd").exists() and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_max_updates_travels_and_format_1_folders_still_load(tmp_path):
    m, designs, keys = fitted(seed=5)
    m.set_params(max_updates=4)
    path = m.save(tmp_path / "model")
    meta = json.loads((path / "model.json").read_text())
    assert meta["format_version"] == 2 and meta["params"]["max_updates"] == 4
    assert load_model(path).max_updates == 4
    # a folder written before max_updates existed: format 1, no such parameter
    del meta["params"]["max_updates"]
    meta["format_version"] = 1
    (path / "model.json").write_text(json.dumps(meta))
    old = load_model(path)
    assert old.max_updates is None
    np.testing.assert_array_equal(old.predict_logit(designs, keys), m.predict_logit(designs, keys))
    meta["format_version"] = 99
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"format this code reads \[1, 2\].*format 99"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="no model.json"):
        load_model(tmp_path / "nothing")


def test_folder_from_before_best_valid_reads_back_the_update_it_holds(tmp_path):
    """Folders written before best_valid_ stored the best validation update as best_ even
    with keep_best off (the coefficients are the last update's): read back, best_ is the
    last update and best_valid_ the stored one; with keep_best on nothing changes."""
    m, _, _ = fitted()
    for keep_best in (True, False):
        m.keep_best = keep_best
        path = m.save(tmp_path / f"keep_{keep_best}")
        meta = json.loads((path / "model.json").read_text())
        stored = meta.pop("best_valid_")
        meta["best_"] = {**stored, "update": 0}  # what an old folder held: not the last update
        (path / "model.json").write_text(json.dumps(meta))
        m2 = GLMix.load(path)
        assert m2.best_valid_ == meta["best_"]
        if keep_best:
            assert m2.best_ == meta["best_"]
        else:
            assert m2.best_["update"] == len(m.history_) - 1
            assert m2.best_["val_auc"] == m.history_[-1]["val_auc"]
