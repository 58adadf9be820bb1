"""GLMix: coordinate descent, validation, scoring, and the watchlog design blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from evaluation import auc
from glmix import FixedEffect, GLMix, RandomEffect
from glmix.solvers import softplus
from tests.reproducibility import assert_same_run
from watchlog import FeatureEncoder, design_matrices

pytestmark = pytest.mark.usefixtures("one_thread")


def make_data(seed=0, n=6000, n_learners=150, n_courses=40, pl=3, pc=4):
    """Rows = (learner, course) impressions; logit = global + per-learner + per-course."""
    rng = np.random.default_rng(seed)
    lf = rng.standard_normal((n_learners, pl))  # learner features
    cf = rng.standard_normal((n_courses, pc))  # course features
    li = rng.integers(0, n_learners, n)
    ci = rng.integers(0, n_courses, n)
    g = np.c_[lf[li], cf[ci]]
    per_learner = rng.normal(0, 0.8, (n_learners, pc))  # learners' tastes for course features
    per_course = rng.normal(0, 0.8, (n_courses, pl))
    z = g @ rng.normal(0, 0.5, pl + pc) - 1.0
    z += (cf[ci] * per_learner[li]).sum(1) + (lf[li] * per_course[ci]).sum(1)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    designs = {"global": sp.csr_matrix(g), "per_learner": cf[ci], "per_course": lf[li]}
    keys = {"learner": np.array([f"L{i}" for i in li]), "course": ci}
    return designs, keys, y


def split(designs, keys, y, lo, hi):
    return (
        {k: v[lo:hi] for k, v in designs.items()},
        {k: v[lo:hi] for k, v in keys.items()},
        y[lo:hi],
    )


def model(**kw):
    return GLMix(
        fixed=FixedEffect(l2=1.0),
        random={
            "per_learner": RandomEffect(key="learner", l2=2.0, intercept_l2=1.0, dtype="float64"),
            "per_course": RandomEffect(key="course", l2=2.0, dtype="float64"),
        },
        **kw,
    )


def test_coordinate_descent_objective_never_increases_and_history():
    d, k, y = make_data()
    tr, va = split(d, k, y, 0, 5000), split(d, k, y, 5000, 6000)
    m = model(passes=3, keep_best=False).fit(*tr, validation=va)
    obj = [h["objective"] for h in m.history_]
    assert len(m.history_) == 9 and [h["coordinate"] for h in m.history_[:3]] == [
        "global",
        "per_learner",
        "per_course",
    ]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(obj, obj[1:], strict=False))
    assert obj[-1] < 0.9 * obj[0]
    # the recorded objective is the model's: weighted loss + every coordinate's penalty
    z = m.predict_logit(tr[0], tr[1])
    yt = tr[2]
    loss = float((softplus(torch.from_numpy(z)).numpy() - yt * z).sum())
    pen = sum(c.penalty() for c in m.coordinates_.values())
    assert obj[-1] == pytest.approx(loss + pen, rel=1e-9)
    assert m.history_[-1]["val_auc"] == pytest.approx(auc(va[2], m.predict_logit(va[0], va[1])))
    # random effects help on held-out rows
    assert m.history_[-1]["val_auc"] > m.history_[0]["val_auc"] + 0.05


def _overfitting_fit(keep_best: bool):
    """(model, validation set): tiny L2, so the per-entity models overfit and a later update
    can be worse on validation than an earlier one."""
    d, k, y = make_data(seed=1, n=3000)
    tr, va = split(d, k, y, 0, 2000), split(d, k, y, 2000, 3000)
    m = GLMix(
        fixed=FixedEffect(l2=1.0),
        random={"per_learner": RandomEffect(key="learner", l2=1e-3, dtype="float64")},
        passes=2,
        keep_best=keep_best,
    ).fit(*tr, validation=va)
    return m, va


def test_keep_best_keeps_the_best_validation_update():
    m, va = _overfitting_fit(keep_best=True)
    aucs = [h["val_auc"] for h in m.history_]
    assert m.best_["val_auc"] == max(aucs) and m.best_["update"] == int(np.argmax(aucs))
    assert auc(va[2], m.predict_logit(va[0], va[1])) == pytest.approx(max(aucs))
    assert m.best_valid_ == m.best_


def test_without_keep_best_best_names_the_last_update_the_model_holds():
    m, va = _overfitting_fit(keep_best=False)
    aucs = [h["val_auc"] for h in m.history_]
    assert int(np.argmax(aucs)) != len(aucs) - 1  # the data makes the two differ
    assert m.best_["update"] == len(aucs) - 1 and m.best_["val_auc"] == aucs[-1]
    assert auc(va[2], m.predict_logit(va[0], va[1])) == pytest.approx(aucs[-1])
    assert m.best_valid_["update"] == int(np.argmax(aucs))


def test_offset_order_and_fixed_only():
    d, k, y = make_data(seed=2, n=2000)
    o = np.random.default_rng(0).normal(0, 0.3, len(y))
    m = GLMix(fixed=FixedEffect(l2=1.0)).fit(d, k, y, offset=o)
    fe = FixedEffect(l2=1.0).fit(d["global"], y, offset=o)
    np.testing.assert_allclose(m.coordinates_["global"].coef_, fe.coef_, atol=1e-8)
    np.testing.assert_allclose(
        m.predict_logit(d, k, offset=o), fe.decision_function(d["global"]) + o
    )
    # another update order is followed; both head for the same (unique) optimum, slowly:
    # block coordinate descent converges linearly (measured: 727.8 vs 729.9 after 8 passes)
    a = model(passes=2, keep_best=False).fit(d, k, y)
    b = model(passes=2, keep_best=False, order=["per_course", "per_learner", "global"]).fit(d, k, y)
    assert [h["coordinate"] for h in b.history_[:3]] == ["per_course", "per_learner", "global"]
    obj = [h["objective"] for h in b.history_]
    assert all(q <= p * (1 + 1e-9) for p, q in zip(obj, obj[1:], strict=False))
    assert obj[-1] == pytest.approx(a.history_[-1]["objective"], rel=0.05)
    with pytest.raises(ValueError, match="order: must name every coordinate"):
        model(order=["global"]).fit(d, k, y)


def test_scoring_components_unknown_candidates_and_proba():
    d, k, y = make_data(seed=3, n=3000)
    m = model().fit(d, k, y)
    te = {n: v[:10] for n, v in d.items()}
    tk = {"learner": k["learner"][:10].copy(), "course": k["course"][:10].copy()}
    tk["learner"][:3] = "new learner"
    tk["course"][5] = 10_000
    sc = m.score_components(te, tk)
    assert sc.n_unknown == {"per_learner": 3, "per_course": 1}
    assert np.all(sc.components["per_learner"][:3] == 0) and sc.components["per_course"][5] == 0
    np.testing.assert_allclose(sc.total, sum(sc.components.values()))
    p = m.predict_proba(te, tk)
    assert (
        p.shape == (10, 2)
        and np.allclose(p.sum(1), 1)
        and np.allclose(p[:, 1], 1 / (1 + np.exp(-sc.total)))
    )


def test_max_updates_stops_after_the_chosen_update_across_passes():
    """A refit with max_updates = best update + 1 runs exactly up to that update: its pass
    and its coordinate, not the rest of the pass."""
    d, k, y = make_data(seed=6, n=4000)
    tr, va = split(d, k, y, 0, 3200), split(d, k, y, 3200, 4000)
    sel = model(passes=3, order=["per_course", "global", "per_learner"]).fit(*tr, validation=va)
    assert len(sel.history_) == 9
    for best in (4, 0):  # pass 1's "global"; pass 0's first coordinate
        h = sel.history_[best]
        refit = model(passes=h["pass"] + 1, max_updates=best + 1, keep_best=False)
        refit.set_params(order=["per_course", "global", "per_learner"]).fit(*tr)
        assert len(refit.history_) == best + 1
        assert refit.history_[-1]["coordinate"] == h["coordinate"]
        assert refit.history_[-1]["pass"] == h["pass"]
        # the same updates on the same rows: the same path as the selection fit
        assert refit.history_[-1]["objective"] == pytest.approx(h["objective"], rel=1e-6)
    # stopped after update 0 (per_course): the others were never updated and score 0
    sc = refit.score_components(*va[:2])
    assert not sc.components["global"].any() and not sc.components["per_learner"].any()
    assert sc.components["per_course"].any()
    assert refit.coordinates_["global"].fit_stats_["updated"] is False
    assert refit.coordinates_["global"].penalty() == 0.0
    # more updates than passes allow: the passes bound it
    assert len(model(passes=1, max_updates=10, keep_best=False).fit(*tr).history_) == 3
    for bad, err in ((0, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match="max_updates"):
            model(max_updates=bad).fit(*tr)


def test_plugs_into_watchlog_design_matrices():
    learners = pd.DataFrame({"learner_id": range(30), "segment": list("abc") * 10})
    courses = pd.DataFrame(
        {"course_id": range(12), "category": list("xyzw") * 3, "duration_seconds": np.arange(12.0)}
    )
    lb = FeatureEncoder(categorical=["segment"]).fit(learners).encode(learners)
    cb = (
        FeatureEncoder(categorical=["category"], numeric=["duration_seconds"])
        .fit(courses)
        .encode(courses)
    )
    rng = np.random.default_rng(4)
    li, ci = rng.integers(0, 30, 2000), rng.integers(0, 12, 2000)
    y = (rng.random(2000) < 0.2 + 0.5 * (ci % 4 == li % 3)).astype(float)
    designs = design_matrices(li, ci, lb, cb)
    keys = {"learner": li, "course": ci}
    m = model(passes=2).fit(designs, keys, y)
    pl = m.coordinates_["per_learner"]
    # the design's own intercept column is the intercept; names travel with the model
    assert not pl.intercept_added_ and pl.feature_names_ == designs["per_learner"].names
    assert m.coordinates_["global"].feature_names_[0] == "intercept"
    res = m.evaluate(designs, keys, y, per_entity="learner")
    assert (
        res["auc"] > 0.7
        and res["per_entity_auc_mean"] > 0.6
        and res["n_unknown"]
        == {
            "per_learner": 0,
            "per_course": 0,
        }
    )


def test_categorical_keys_fit_and_score_as_their_values():
    """An event log's categorical id columns are read by code (no Python string per row):
    the id maps, the coefficients, the scores and the validation history are those of the
    same ids as an array of strings, bit for bit; categories no row uses are not entities."""
    from glmix._inputs import check_keys, distinct_ids
    from watchlog.idmap import positions_in

    d, k, y = make_data(seed=3)
    ids = np.array([f"C{i:02d}" for i in k["course"]])  # course ids as strings too
    keys = {"learner": k["learner"], "course": ids}
    cats = {  # categories in another order than the ids sort in, plus unused ones
        c: pd.Series(pd.Categorical(v, categories=np.r_[np.unique(v)[::-1], ["zz", "aa"]]))
        for c, v in keys.items()
    }
    held = check_keys(cats["learner"], len(y), "learner")
    assert isinstance(held, pd.Categorical)  # the codes, not an object array
    assert np.array_equal(distinct_ids(held), pd.unique(keys["learner"]))  # first-seen order
    table = pd.Index(np.unique(keys["learner"])[::2])
    assert np.array_equal(
        positions_in(table, cats["learner"]), table.get_indexer(pd.Index(keys["learner"]))
    )
    tr, va = split(d, keys, y, 0, 5000), split(d, keys, y, 5000, 6000)
    tc = ({c: v[:5000] for c, v in d.items()}, {c: v[:5000] for c, v in cats.items()}, y[:5000])
    vc = (va[0], {c: v[5000:] for c, v in cats.items()}, va[2])
    a = model(passes=2).fit(*tr, validation=va)
    b = model(passes=2).fit(*tc, validation=vc)
    for c in ("per_learner", "per_course"):
        assert a.coordinates_[c].ids_ == b.coordinates_[c].ids_
        assert a.coordinates_[c].ids_.index.dtype == b.coordinates_[c].ids_.index.dtype
        assert_same_run(a.coordinates_[c].coef_, b.coordinates_[c].coef_, err_msg=c)
    assert [h["val_auc"] for h in a.history_] == [h["val_auc"] for h in b.history_]
    assert_same_run(a.predict_logit(*va[:2]), b.predict_logit(*vc[:2]))
