"""Bad input: a clear error naming the argument, or a defined, counted behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from glmix import FixedEffect, GLMix, RandomEffect

pytestmark = pytest.mark.usefixtures("one_thread")


def data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    ent = rng.integers(0, 20, n)
    y = (rng.random(n) < 0.3).astype(float)
    return {"global": X, "per_learner": X[:, :2]}, {"learner": ent}, y


def model(**re_kw):
    return GLMix(fixed=FixedEffect(), random={"per_learner": RandomEffect(key="learner", **re_kw)})


def test_non_binary_labels():
    d, k, y = data()
    for bad, shown in ((2.0, "2.0"), (0.5, "0.5"), (np.nan, "nan")):
        yb = y.copy()
        yb[[3, 7]] = bad
        with pytest.raises(
            ValueError, match=rf"y: labels must be binary 0/1; 2 of 400.*row 3: {shown}"
        ):
            model().fit(d, k, yb)
    with pytest.raises(TypeError, match="y: labels must be 0/1 numbers"):
        model().fit(d, k, np.array(["yes"] * 400))


def test_negative_or_nonfinite_weights_and_offsets():
    d, k, y = data()
    w = np.ones(400)
    w[5] = -1.0
    with pytest.raises(
        ValueError, match=r"sample_weight: weights must be finite and >= 0; 1 of 400.*row 5: -1"
    ):
        model().fit(d, k, y, sample_weight=w)
    with pytest.raises(ValueError, match="sample_weight: all 400 weights are 0"):
        model().fit(d, k, y, sample_weight=np.zeros(400))
    with pytest.raises(ValueError, match=r"offset: must be finite; 1 of 400"):
        model().fit(d, k, y, offset=np.r_[np.inf, np.zeros(399)])
    with pytest.raises(ValueError, match=r"sample_weight: expected shape \(400,\)"):
        model().fit(d, k, y, sample_weight=np.ones(10))


@pytest.mark.parametrize("sparse", [False, True])
def test_nan_features_name_design_rows_and_feature(sparse):
    d, k, y = data()
    X = d["per_learner"].copy()
    X[[4, 9], 1] = np.nan
    d["per_learner"] = sp.csr_matrix(X) if sparse else X
    with pytest.raises(
        ValueError,
        match=r"designs\['per_learner'\]: features must be finite.*2 value\(s\) in 2 of 400 rows.*row 4 'x1'=nan",
    ):
        model().fit(d, k, y)
    with pytest.raises(ValueError, match="FixedEffect X: features must be finite"):
        FixedEffect().fit(X, y)


def test_single_class_entity_stays_finite_and_is_counted():
    d, k, y = data()
    y[k["learner"] == 0] = 1.0  # learner 0 clicked everything
    y[k["learner"] == 1] = 0.0  # learner 1 never clicked
    for il2 in (None, 0.0):  # penalized intercept, and unpenalized (then l2 steps in)
        m = model(l2=1.0, intercept_l2=il2, dtype="float64").fit(d, k, y)
        re = m.coordinates_["per_learner"]
        stats = re.fit_stats_
        assert stats["single_class"] >= 2 and stats["converged"] == stats["solved"]
        assert np.isfinite(re.coef_).all() and np.abs(re.coef_).max() < 20
        e0 = re.ids_.to_index([0])[0]
        assert re.coef_[e0, re.intercept_index_] > 0  # pulled toward its one class, finitely
        assert stats["single_class_intercept_penalized"] == (
            stats["single_class"] if il2 == 0 else 0
        )
    # the fixed effect's unpenalized intercept cannot fit one class at all: a clear error
    with pytest.raises(ValueError, match="all 400 positively weighted labels are 1"):
        FixedEffect().fit(d["global"], np.ones(400))


def test_empty_coordinate():
    d, k, y = data()
    # no features and no intercept: nothing to fit
    d0 = dict(d, per_learner=np.zeros((400, 0), dtype=np.float32))
    with pytest.raises(ValueError, match="per_learner|learner.*empty coordinate"):
        model(fit_intercept=False).fit(d0, k, y)
    # no features but an intercept: a per-entity intercept model, which is fine
    m = model().fit(d0, k, y)
    assert m.coordinates_["per_learner"].feature_names_ == ("intercept",)
    # no entity with enough rows: every entity keeps its prior (zero), warned and counted
    with pytest.warns(UserWarning, match="no entity has >= min_rows=1000"):
        m = model(min_rows=1000).fit(d, k, y)
    re = m.coordinates_["per_learner"]
    assert re.fit_stats_["solved"] == 0 and re.fit_stats_["below_min_rows"] == 20
    assert np.all(re.coef_ == 0)
    with pytest.raises(ValueError, match="no coordinates"):
        GLMix().fit(d, k, y)


def test_missing_or_mismatched_inputs():
    d, k, y = data()
    with pytest.raises(KeyError, match=r"no design for coordinate\(s\) \['per_learner'\]"):
        model().fit({"global": d["global"]}, k, y)
    with pytest.raises(KeyError, match="keyed by 'learner', which is not in keys"):
        model().fit(d, {"user": k["learner"]}, y)
    with pytest.raises(ValueError, match=r"designs\['global'\]: expected 400 rows"):
        model().fit(dict(d, **{"global": d["global"][:10]}), k, y)
    with pytest.raises(ValueError, match="entity ids must not be missing; 1 of 400"):
        model().fit(d, {"learner": np.r_[None, k["learner"][1:]].astype(object)}, y)
    with pytest.raises(ValueError, match="l2: must be > 0"):
        model(l2=0.0).fit(d, k, y)
    m = model().fit(d, k, y)
    with pytest.raises(ValueError, match="fitted on 2 features; got 3"):
        m.predict_logit({"global": d["global"], "per_learner": d["global"]}, k)


def test_inputs_that_would_score_silently_wrong_are_refused():
    """Each of these scored without a word: every row unknown, coefficients on the wrong
    columns, an infinite weight, or an error only after the first solve."""
    import pandas as pd

    from glmix import watch_time_weights

    d, k, y = data()
    m = model().fit(d, k, y)
    # text ids against a model fitted on integers: nothing would match
    with pytest.raises(TypeError, match=r"keys\['learner'\]: str ids, but RandomEffect\(key="
                                        r"'learner'\) was fitted on int ids"):  # fmt: skip
        m.predict_logit(d, {"learner": k["learner"].astype(str)})
    # a DataFrame's columns name the features: reordered or renamed columns are refused
    X = pd.DataFrame(d["global"], columns=["a", "b", "c"])
    fe = FixedEffect().fit(X, y)
    assert fe.feature_names_ == ("a", "b", "c", "intercept")
    np.testing.assert_allclose(fe.decision_function(X), fe.decision_function(X.to_numpy()))
    with pytest.raises(ValueError, match=r"the same columns in another order"):
        fe.decision_function(X[["b", "a", "c"]])
    with pytest.raises(ValueError, match=r"missing \['c'\], not fitted \['z'\]"):
        fe.decision_function(X.rename(columns={"c": "z"}))
    # watch time: inf is refused with its rows, NaN stays "missing"
    with pytest.raises(ValueError, match=r"watch_seconds: must be finite and >= 0 .*1 of 4 "
                                         r"are not, e.g. rows \[0\]"):  # fmt: skip
        watch_time_weights([1, 1, 0, 1], [np.inf, 1, 50, np.nan])
    # nullable labels with NA: the row-level message, not a dtype TypeError
    labels = pd.Series([True, False, None, True] * 100, dtype="boolean")
    with pytest.raises(ValueError, match=r"y: labels must be binary 0/1; 100 of 400.*row 2: nan"):
        model().fit(d, k, labels)
    # a validation set of one class fails before any fitting, naming it
    with pytest.raises(ValueError, match=r"validation y: the validation AUC needs both classes"):
        model().fit(d, k, y, validation=(d, k, np.ones(len(y))))


@pytest.mark.parametrize(
    "ids",
    [np.arange(400) % 2 == 0, np.arange(400, dtype=np.uint64) % 20 + np.uint64(2**63)],
    ids=["bool", "uint64 past int64"],
)
def test_saved_ids_load_back_equal(ids, tmp_path):
    """bool ids were saved as 0/1 and uint64 ids past 2**63 wrapped negative: after a load
    every row was unknown and scored 0."""
    d, _, y = data()
    m = model().fit(d, {"learner": ids}, y)
    m.save(tmp_path / "m")
    loaded = GLMix.load(tmp_path / "m")
    est = loaded.coordinates_["per_learner"]
    assert est.ids_.index.dtype == m.coordinates_["per_learner"].ids_.index.dtype
    assert loaded.score_components(d, {"learner": ids}).n_unknown == {"per_learner": 0}
    np.testing.assert_allclose(
        loaded.predict_logit(d, {"learner": ids}), m.predict_logit(d, {"learner": ids})
    )
