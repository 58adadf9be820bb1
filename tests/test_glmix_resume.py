"""GLMix coordinate descent killed after an update and fitted again with the same state file
resumes after the last finished update and ends with the uninterrupted fit's model, exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import glmix.model
from tests.reproducibility import assert_same_run
from tests.test_glmix_model import make_data, model, split

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    pass


def _fit(state_path=None, **kw):
    designs, keys, y = make_data()
    train, valid = split(designs, keys, y, 0, 4500), split(designs, keys, y, 4500, 6000)
    return model(passes=3, **kw).fit(*train, validation=valid, state_path=state_path)


def _without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_killed_fit_resumes_after_last_update_and_ends_the_same(tmp_path, monkeypatch):
    whole = _fit()
    path = tmp_path / "state.npz"
    real_save, calls = glmix.model.save_state, []

    def save_then_die(*args, **kwargs):  # the 4th update's state is written, then a "kill"
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 4:
            raise Killed

    monkeypatch.setattr(glmix.model, "save_state", save_then_die)
    with pytest.raises(Killed):
        _fit(path)
    monkeypatch.setattr(glmix.model, "save_state", real_save)
    with np.load(path) as z:
        saved = json.loads(str(z["meta"]))
    assert saved["next_update"] == 4
    resumed = _fit(path)
    assert len(resumed.history_) == len(whole.history_) == 9
    # updates 0-3 came from the file (their timings too), not recomputed
    assert [h["seconds"] for h in resumed.history_[:4]] == [h["seconds"] for h in saved["history"]]
    h1, h2 = _without_seconds(whole.history_), _without_seconds(resumed.history_)
    assert [h["val_auc"] for h in h1] == [h["val_auc"] for h in h2]
    assert [h["objective"] for h in h1[4:]] == pytest.approx([h["objective"] for h in h2[4:]])
    assert resumed.best_ == whole.best_
    for name, est in whole.coordinates_.items():
        assert_same_run(resumed.coordinates_[name].coef_, est.coef_, err_msg=name)


def test_state_of_another_fit_is_not_used(tmp_path):
    path = tmp_path / "state.npz"
    model(passes=1).fit(*split(*make_data(), 0, 4500), state_path=path)
    again = _fit(path)  # other settings (passes): a fresh fit, which then owns the file
    assert len(again.history_) == 9
    assert_same_run(again.coordinates_["global"].coef_, _fit().coordinates_["global"].coef_)


def test_state_of_a_fit_on_other_inputs_is_not_used(tmp_path, caplog):
    """Same settings, labels and row count, other designs or keys: a fresh fit each time."""
    path = tmp_path / "state.npz"
    designs, keys, y = make_data()
    train, valid = split(designs, keys, y, 0, 4500), split(designs, keys, y, 4500, 6000)
    fresh = _fit()  # the fit below, uninterrupted and without a state
    rng = np.random.default_rng(5)
    other = {name: d.copy() for name, d in train[0].items()}  # new values, same shapes
    other["global"].data[:] = rng.normal(size=other["global"].nnz)
    shuffled = {key: rng.permutation(np.asarray(v)) for key, v in train[1].items()}

    def widen(part):
        g = sp.hstack([part[0]["global"], np.ones((len(part[2]), 1))]).tocsr()
        return ({**part[0], "global": g}, *part[1:])

    for train_, valid_ in (
        ((other, train[1], train[2]), valid),
        ((train[0], shuffled, train[2]), valid),
        (widen(train), widen(valid)),
    ):
        model(passes=3).fit(*train_, validation=valid_, state_path=path)
        caplog.clear()
        again = _fit(path)  # the real inputs: the state above is another fit's
        assert "belongs to another fit" in caplog.text
        for name, est in fresh.coordinates_.items():
            assert_same_run(again.coordinates_[name].coef_, est.coef_, err_msg=name)
