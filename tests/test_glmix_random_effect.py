"""Random-effect coordinate: every entity's coefficients equal scikit-learn's / scipy's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from glmix import RandomEffect, newton_logistic
from glmix.random_effect import group_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def make_problem(seed=0, n_entities=40, p=4, max_rows=30, offsets=True):
    rng = np.random.default_rng(seed)
    n_e = rng.integers(1, max_rows, n_entities)
    ent = np.repeat(np.arange(n_entities), n_e)
    rng.shuffle(ent)
    n = len(ent)
    X = rng.standard_normal((n, p))
    X[rng.random((n, p)) < 0.3] = 0.0
    true = rng.normal(0, 1, (n_entities, p))
    z = (X * true[ent]).sum(1) - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    w = rng.uniform(0.2, 3.0, n)
    o = rng.normal(0, 0.5, n) if offsets else np.zeros(n)
    return X, ent, y, w, o


def exact_fit(A, y, w, o, pen, mean=None):
    """Minimize sum w [softplus(A b + o) - y (A b + o)] + 1/2 sum pen (b - mean)^2 (trust-exact)."""
    mean = np.zeros(A.shape[1]) if mean is None else mean

    def f(b):
        z = A @ b + o
        return (w * (np.logaddexp(0, z) - y * z)).sum() + 0.5 * (pen * (b - mean) ** 2).sum()

    def g(b):
        p = 1 / (1 + np.exp(-(A @ b + o)))
        return A.T @ (w * (p - y)) + pen * (b - mean)

    def h(b):
        p = 1 / (1 + np.exp(-(A @ b + o)))
        return (A * (w * p * (1 - p))[:, None]).T @ A + np.diag(pen)

    res = minimize(f, mean.copy(), jac=g, hess=h, method="trust-exact", options={"gtol": 1e-12})
    return res.x


def with_ones(X):
    return np.c_[X, np.ones(len(X))]


def test_matches_sklearn_penalized_and_unpenalized_intercept():
    X, ent, y, w, _ = make_problem(seed=1, offsets=False)
    l2 = 0.7
    for intercept_l2, sk_kwargs in ((l2, {"fit_intercept": False}), (0.0, {})):
        re = RandomEffect(key="e", l2=l2, intercept_l2=intercept_l2, dtype="float64")
        re.fit(X, ent, y, w)
        checked = 0
        for e in range(40):
            m = ent == e
            if len(np.unique(y[m])) < 2:  # sklearn refuses one class (test_glmix_bad_input)
                continue
            A = with_ones(X[m]) if intercept_l2 else X[m]
            sk = LogisticRegression(C=1 / l2, tol=1e-12, max_iter=10_000, **sk_kwargs)
            sk.fit(A, y[m], sample_weight=w[m])
            want = np.r_[
                sk.coef_.ravel()[:4], sk.coef_.ravel()[4] if intercept_l2 else sk.intercept_
            ]
            row = re.coef_[re.ids_.to_index([e])[0]]
            np.testing.assert_allclose(row, want, atol=1e-6)
            checked += 1
        assert checked >= 25


@pytest.mark.parametrize("sparse", [False, True])
def test_matches_scipy_with_offsets_and_separate_intercept_penalty(sparse):
    X, ent, y, w, o = make_problem(seed=2)
    l2, il2 = 0.8, 0.3
    Xin = sp.csr_matrix(X) if sparse else X
    re = RandomEffect(key="e", l2=l2, intercept_l2=il2, dtype="float64").fit(Xin, ent, y, w, o)
    assert re.fit_stats_["converged"] == 40 and re.fit_stats_["single_class"] > 0
    for e in range(40):
        m = ent == e
        want = exact_fit(with_ones(X[m]), y[m], w[m], o[m], np.r_[np.full(4, l2), il2])
        np.testing.assert_allclose(re.coef_[e], want, atol=1e-6)
    # scores: x . coef[entity] + intercept
    np.testing.assert_allclose(
        re.decision_function(Xin, ent), (with_ones(X) * re.coef_[ent]).sum(1), atol=1e-12
    )


def test_float32_chunking_and_sparse_projection_agree():
    X, ent, y, w, o = make_problem(seed=3, n_entities=60, p=6)
    ref = RandomEffect(key="e", l2=1.0, dtype="float64").fit(X, ent, y, w, o)
    small = RandomEffect(key="e", l2=1.0, dtype="float64", chunk_elements=64)
    small.fit(sp.csr_matrix(X), ent, y, w, o)
    assert small.fit_stats_["chunks"] > ref.fit_stats_["chunks"]
    np.testing.assert_allclose(small.coef_, ref.coef_, atol=1e-9)
    f32 = RandomEffect(key="e", l2=1.0).fit(X.astype(np.float32), ent, y, w, o)
    assert f32.coef_.dtype == np.float32
    np.testing.assert_allclose(f32.coef_, ref.coef_, atol=1e-4)


def test_feature_absent_from_an_entity_stays_at_zero():
    X, ent, y, w, o = make_problem(seed=4)
    X[ent == 3, 1] = 0.0  # entity 3 never sees feature 1
    re = RandomEffect(key="e", l2=1.0, dtype="float64").fit(sp.csr_matrix(X), ent, y, w, o)
    assert re.coef_[3, 1] == 0.0
    m = ent == 3
    keep = [0, 2, 3, 4]
    want = exact_fit(with_ones(X[m])[:, keep], y[m], w[m], o[m], np.ones(4))
    np.testing.assert_allclose(re.coef_[3, keep], want, atol=1e-6)


def test_variances_are_the_inverse_hessian_diagonal():
    X, ent, y, w, o = make_problem(seed=5)
    re = RandomEffect(key="e", l2=0.5, dtype="float64", variances=True).fit(X, ent, y, w, o)
    for e in (0, 7, 19):
        m = ent == e
        A = with_ones(X[m])
        z = A @ re.coef_[e] + o[m]
        p = 1 / (1 + np.exp(-z))
        H = (A * (w[m] * p * (1 - p))[:, None]).T @ A + 0.5 * np.eye(5)
        np.testing.assert_allclose(re.coef_var_[e], np.diag(np.linalg.inv(H)), rtol=1e-6)


def test_min_rows_keeps_prior_and_counts():
    X, ent, y, w, o = make_problem(seed=6)
    n_rows = np.bincount(ent)
    re = RandomEffect(key="e", l2=1.0, min_rows=10, dtype="float64").fit(X, ent, y, w, o)
    small = n_rows < 10
    assert re.fit_stats_["below_min_rows"] == small.sum() > 0
    assert re.fit_stats_["solved"] == (~small).sum()
    assert np.all(re.coef_[small] == 0) and np.all(np.abs(re.coef_[~small]).sum(1) > 0)
    # their rows score 0
    s = re.decision_function(X, ent)
    assert np.all(s[small[ent]] == 0)


def test_max_rows_subsample_is_seeded_and_reweighted():
    codes = np.repeat(np.arange(3), [5, 50, 12])
    g = group_rows(codes, 3, max_rows=10, seed=0)
    np.testing.assert_array_equal(g.count, [5, 10, 10])
    np.testing.assert_allclose(g.weight_mult, [1.0, 5.0, 1.2])
    assert np.array_equal(g.order, group_rows(codes, 3, max_rows=10, seed=0).order)
    assert not np.array_equal(g.order, group_rows(codes, 3, max_rows=10, seed=1).order)
    # the solved problem is the sample with weights x n / max_rows
    X, ent, y, w, o = make_problem(seed=7, max_rows=60)
    re = RandomEffect(key="e", l2=1.0, max_rows=20, seed=3, dtype="float64").fit(X, ent, y, w, o)
    g = group_rows(re.ids_.to_index(ent), 40, max_rows=20, seed=3)
    e = int(np.argmax(g.n_rows))
    rows = g.order[g.start[e] : g.start[e] + g.count[e]]
    want = exact_fit(with_ones(X[rows]), y[rows], w[rows] * g.weight_mult[e], o[rows], np.ones(5))
    np.testing.assert_allclose(re.coef_[e], want, atol=1e-6)
    assert re.fit_stats_["subsampled"] == (np.bincount(ent) > 20).sum()


def test_prior_shrinks_toward_prior_mean():
    X, ent, y, w, o = make_problem(seed=8)
    old = RandomEffect(key="e", l2=1.0, dtype="float64", variances=True).fit(X, ent, y, w, o)
    X2, _, y2, w2, o2 = make_problem(seed=9, n_entities=40)
    ent2 = np.random.default_rng(0).integers(0, 45, len(y2))  # 40 known + up to 5 new ids
    # without variances in the prior: mean = old coef, precision = l2
    old_nv = RandomEffect(key="e", l2=1.0, dtype="float64").fit(X, ent, y, w, o)
    new = RandomEffect(key="e", l2=2.0, dtype="float64").fit(X2, ent2, y2, w2, o2, prior=old_nv)
    for e in (0, 5, 41):
        m = ent2 == e
        mean = old_nv.coef_[e] if e < 40 else np.zeros(5)
        want = exact_fit(with_ones(X2[m]), y2[m], w2[m], o2[m], np.full(5, 2.0), mean)
        np.testing.assert_allclose(new.coef_[new.ids_.to_index([e])[0]], want, atol=1e-6)
    # with variances: precision 1 / var; a tiny variance pins the coefficients to the prior
    old.coef_var_[:] = 1e-10
    pinned = RandomEffect(key="e", l2=1.0, dtype="float64").fit(X2, ent2, y2, w2, o2, prior=old)
    known = pinned.ids_.to_index(np.arange(40))
    np.testing.assert_allclose(pinned.coef_[known], old.coef_, atol=1e-6)


def test_unknown_entity_scores_zero_and_is_counted():
    X, ent, y, w, o = make_problem(seed=10)
    re = RandomEffect(key="e", l2=1.0).fit(X, ent, y, w, o)
    s, unknown = re.decision_function(X[:5], np.array([0, 1, 999, 1000, 2]), return_unknown=True)
    assert unknown == 2 and s[2] == 0 and s[3] == 0 and s[0] != 0


def test_solver_batch_independent_of_batch_composition():
    """An entity's solution does not depend on which other entities share its batch."""
    rng = np.random.default_rng(11)
    B, F, R = 6, 3, 8
    XT = torch.tensor(rng.standard_normal((B, F, R)))
    y = torch.tensor((rng.random((B, R)) < 0.5).astype(float))
    w, o = torch.ones(B, R, dtype=torch.float64), torch.zeros(B, R, dtype=torch.float64)
    pen = torch.full((B, F), 0.5, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = newton_logistic(XT, y, w, o, pen, tol=1e-10)
        one = newton_logistic(XT[2:3], y[2:3], w[2:3], o[2:3], pen[2:3], tol=1e-10)
    np.testing.assert_allclose(full.coef[2:3].numpy(), one.coef.numpy(), atol=1e-12, rtol=0)
    assert bool(full.converged.all())
