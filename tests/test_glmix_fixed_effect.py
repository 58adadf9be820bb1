"""Fixed effect: equals scikit-learn / scipy; elastic net satisfies its optimality conditions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from glmix import FixedEffect
from watchlog import FeatureBlock

pytestmark = pytest.mark.usefixtures("one_thread")


def make_problem(seed=0, n=2000, p=12):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    X[rng.random((n, p)) < 0.6] = 0.0
    z = X @ rng.normal(0, 0.7, p) - 0.8
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return X, y, rng.uniform(0.2, 3.0, n), rng.normal(0, 0.5, n)


@pytest.mark.parametrize("sparse", [False, True])
def test_matches_sklearn_unpenalized_intercept(sparse):
    X, y, w, _ = make_problem()
    l2 = 3.0
    sk = LogisticRegression(C=1 / l2, tol=1e-12, max_iter=10_000).fit(X, y, sample_weight=w)
    fe = FixedEffect(l2=l2).fit(sp.csr_matrix(X) if sparse else X, y, w)
    assert fe.fit_stats_["converged"] and fe.intercept_added_
    np.testing.assert_allclose(fe.coef_, np.r_[sk.coef_.ravel(), sk.intercept_], atol=1e-6)
    np.testing.assert_allclose(fe.decision_function(X), sk.decision_function(X), atol=1e-6)


def test_design_intercept_column_is_used_and_unpenalized():
    X, y, w, _ = make_problem(seed=1)
    names = ("intercept",) + tuple(f"f{j}" for j in range(X.shape[1]))
    block = FeatureBlock(sp.csr_matrix(np.c_[np.ones(len(X)), X]).astype(np.float32), names)
    fe = FixedEffect(l2=2.0).fit(block, y, w)
    assert not fe.intercept_added_ and fe.intercept_index_ == 0 and fe.feature_names_ == names
    sk = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000)
    sk.fit(X.astype(np.float32).astype(np.float64), y, sample_weight=w)
    np.testing.assert_allclose(fe.coef_, np.r_[sk.intercept_, sk.coef_.ravel()], atol=1e-6)


def test_matches_scipy_with_offsets():
    X, y, w, o = make_problem(seed=2)
    l2 = 1.5
    A = np.c_[X, np.ones(len(X))]
    pen = np.r_[np.full(X.shape[1], l2), 0.0]

    def fg(b):
        z = A @ b + o
        p = 1 / (1 + np.exp(-z))
        f = (w * (np.logaddexp(0, z) - y * z)).sum() + 0.5 * (pen * b * b).sum()
        return f, A.T @ (w * (p - y)) + pen * b

    def h(b):
        p = 1 / (1 + np.exp(-(A @ b + o)))
        return (A * (w * p * (1 - p))[:, None]).T @ A + np.diag(pen)

    want = minimize(
        fg, np.zeros(A.shape[1]), jac=True, hess=h, method="trust-exact", options={"gtol": 1e-10}
    ).x
    fe = FixedEffect(l2=l2, variances=True).fit(X, y, w, o)
    np.testing.assert_allclose(fe.coef_, want, atol=1e-6)
    np.testing.assert_allclose(fe.coef_var_, np.diag(np.linalg.inv(h(want))), rtol=1e-6)


def test_elastic_net_kkt_and_sklearn_saga():
    X, y, w, _ = make_problem(seed=3, n=1000, p=10)
    l1, l2 = 6.0, 1.0
    fe = FixedEffect(l2=l2, l1=l1).fit(X, y, w)
    assert fe.fit_stats_["solver"] == "fista" and fe.fit_stats_["converged"]
    b, c = fe.coef_[:-1], fe.coef_[-1]
    z = X @ b + c
    r = w * (1 / (1 + np.exp(-z)) - y)
    grad = X.T @ r + l2 * b  # gradient of the smooth part
    nz = b != 0
    assert (~nz).sum() >= 1 and nz.sum() >= 1  # the L1 term zeroes some, not all
    scale = w.sum()
    assert np.abs(grad[nz] + l1 * np.sign(b[nz])).max() / scale < 1e-6
    assert np.all(np.abs(grad[~nz]) <= l1 * (1 + 1e-6))
    assert abs(r.sum()) / scale < 1e-6  # unpenalized intercept: zero gradient
    # sklearn: C * sum loss + l1_ratio |b|_1 + (1 - l1_ratio) / 2 |b|^2
    sk = LogisticRegression(
        solver="saga",
        C=1 / (l1 + l2),
        l1_ratio=l1 / (l1 + l2),
        tol=1e-10,
        max_iter=100_000,
    ).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(fe.coef_, np.r_[sk.coef_.ravel(), sk.intercept_], atol=1e-5)


def test_float32_close_to_float64_and_prior():
    X, y, w, o = make_problem(seed=4)
    f64 = FixedEffect(l2=1.0, variances=True).fit(X, y, w, o)
    f32 = FixedEffect(l2=1.0, dtype="float32").fit(X.astype(np.float32), y, w, o)
    np.testing.assert_allclose(f32.coef_, f64.coef_, atol=1e-3)
    # a prior with tiny variances pins every coefficient, the intercept too
    f64.coef_var_[:] = 1e-12
    X2, y2, w2, o2 = make_problem(seed=5)
    pinned = FixedEffect(l2=1.0).fit(X2, y2, w2, o2, prior=f64)
    np.testing.assert_allclose(pinned.coef_, f64.coef_, atol=1e-6)


def _random_csr(rng, n, p, per_row, empty_head=0):
    """(empty_head + n, p) float32 CSR whose first rows are empty, with a dense column 0."""
    cols = np.c_[np.zeros(n, int), rng.integers(1, p, (n, per_row - 1))].ravel()
    m = sp.csr_matrix(
        (
            rng.standard_normal(n * per_row).astype(np.float32),
            (np.repeat(np.arange(n), per_row), cols),
        ),
        shape=(n, p),
    )
    m.sum_duplicates()
    return sp.vstack([sp.csr_matrix((empty_head, p), dtype=np.float32), m], format="csr")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_block_products_equal_one_csr_copy_bit_for_bit(dtype):
    """The CPU solver multiplies the design by row blocks cast on the fly (no float copy of
    X and X^T held): every product must equal the one of a whole torch CSR in that dtype."""
    import torch

    from glmix._inputs import torch_dtype
    from glmix.fixed_effect import _BlockCsr, _to_torch

    dt = torch_dtype(dtype)
    rng = np.random.default_rng(0)
    m = _random_csr(rng, 20_000, 60, 6, empty_head=3)  # column 0: a row of X^T longer than a block
    for block in (1 << 10, 1 << 24):
        X, XT = _BlockCsr(m, dt, block), _BlockCsr(m.T.tocsr(), dt, block)
        if block == 1 << 10:
            assert len(X.blocks) > 100 and max(e - a for a, e, *_ in XT.blocks) == 20_000
        b = torch.from_numpy(rng.standard_normal(60)).to(dt)
        r = torch.from_numpy(rng.standard_normal(m.shape[0])).to(dt)
        assert torch.equal(X @ b, _to_torch(m, "cpu", dt) @ b)
        assert torch.equal(XT @ r, _to_torch(m.T.tocsr(), "cpu", dt) @ r)
    # the column indices are the design's own arrays, not copies; X^T multiplies by X's
    X, XT = _BlockCsr.pair(m, dt)
    assert all(np.shares_memory(col.numpy(), m.indices) for *_, col in X.blocks)
    assert XT.X is X and XT.shape == (60, m.shape[0])
    # into a given output (a slice of a longer buffer), and again after the scratch is dropped
    b = torch.from_numpy(rng.standard_normal(60)).to(dt)
    buf = torch.full((m.shape[0] + 5,), 7.0, dtype=dt)
    out = X.mv(b, buf[2 : 2 + m.shape[0]])
    assert out.data_ptr() == buf[2:].data_ptr() and torch.equal(out, _to_torch(m, "cpu", dt) @ b)
    assert (buf[:2] == 7).all() and (buf[-3:] == 7).all()
    XT.release()  # the pair's one scratch
    assert X._scratch is None
    assert torch.equal(X @ b, out) and X._scratch is not None
    empty = _BlockCsr(sp.csr_matrix((0, 4), dtype=np.float32), dt)
    assert (empty @ torch.zeros(4, dtype=dt)).shape == (0,)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_transposed_products_by_row_blocks_equal_a_stored_transpose(dtype):
    """X^T r on the CPU sums X's row blocks (no transposed copy): it equals the product with
    a stored transpose to rounding (other sum order), for any block size, with empty rows,
    and on a matrix without rows or entries; the same bits on any number of threads."""
    import torch

    from glmix._inputs import torch_dtype
    from glmix.fixed_effect import _BlockCsr, _to_torch, _TransposedBlocks

    dt = torch_dtype(dtype)
    rtol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    rng = np.random.default_rng(4)
    m = _random_csr(rng, 20_000, 60, 6, empty_head=3)
    m.data[m.indices == 7] = 0.0  # a column without entries: 0 in X^T r
    m.eliminate_zeros()
    r = torch.from_numpy(rng.standard_normal(m.shape[0])).to(dt)
    stored = _to_torch(m.T.tocsr(), "cpu", torch.float64) @ r.double()
    for block in (1 << 10, 1 << 24):
        X = _BlockCsr(m, dt, block)
        got = _TransposedBlocks(X) @ r
        assert got.dtype == dt and got.shape == (60,) and got[7] == 0
        np.testing.assert_allclose(got.double(), stored, rtol=rtol, atol=rtol * stored.abs().max())
    # threads: a round of blocks at a time, added in block order: bit for bit any count
    X = _BlockCsr(m, dt, 1 << 10)
    XT, threads = _TransposedBlocks(X), torch.get_num_threads()
    try:
        got = {}
        for n_threads in (1, 2, 3):
            torch.set_num_threads(n_threads)
            got[n_threads] = XT @ r
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got[1], got[2]) and torch.equal(got[1], got[3])
    assert len(XT._extra) == 2  # the scratch of threads 2 and 3, kept for the next product
    XT.release()
    assert XT._extra == [] and X._scratch is None
    for empty in (sp.csr_matrix((0, 4), dtype=np.float32), sp.csr_matrix((5, 4), dtype=np.float32)):
        XT = _BlockCsr.pair(empty, dt)[1]
        assert torch.equal(XT @ torch.ones(empty.shape[0], dtype=dt), torch.zeros(4, dtype=dt))


@pytest.mark.parametrize("added", [True, False])
def test_smooth_in_place_equals_the_plain_expressions(added):
    """_Problem.smooth computes the loss and gradient in reused buffers: bit for bit the
    values of w (softplus(z) - y z) and X^T (w (sigmoid(z) - y)) written out of place."""
    import torch

    import glmix.fixed_effect as fe

    rng = np.random.default_rng(2)
    m = _random_csr(rng, 5_000, 30, 4)
    y = (rng.random(m.shape[0]) < 0.3).astype(float)
    w, o = rng.random(m.shape[0]) + 0.5, rng.normal(0, 0.5, m.shape[0])
    est = FixedEffect(l2=2.0, fit_intercept=added)
    prob = est._prepare(fe.as_design(m, "X"), y, w)
    dev = prob.y.device  # the estimator's device ("auto": CUDA when present)
    prob.o = torch.from_numpy(o).to(dev)
    beta = torch.from_numpy(rng.normal(0, 0.3, prob.p + added)).to(dev)
    X = fe._to_torch(m, dev, torch.float64)
    yt, wt, ot = (torch.from_numpy(a).to(dev) for a in (y, w, o))
    z = X @ beta[: prob.p] + ot + (beta[prob.p] if added else 0.0)
    loss = (wt * (fe.softplus(z) - yt * z)).sum()
    r = wt * (torch.sigmoid(z) - yt)
    g = torch.cat([prob.XT @ r, r.sum().reshape(1)])  # X^T r out of place, the same product
    g = g if added else g[: prob.p]
    diff = beta - prob.mean
    g_want = (g + prob.pen * diff) / prob.W
    for _ in range(2):  # the second evaluation reuses the buffers of the first
        f_got, g_got = prob.smooth(beta)
        assert f_got.item() == ((loss + 0.5 * (prob.pen * diff.square()).sum()) / prob.W).item()
        if dev.type == "cpu":
            assert torch.equal(g_got, g_want)
        else:  # cuSPARSE's X^T r may sum in another order from one call to the next
            torch.testing.assert_close(
                g_got, g_want, rtol=1e-12, atol=1e-12 * g_want.abs().max().item()
            )
    prob.release()
    assert prob._buffers is None
    if dev.type == "cpu":  # the CPU's block CSR holds a scratch; CUDA's design is a plain tensor
        assert prob.X._scratch is None


def test_cpu_fit_and_margins_equal_the_float64_copy_path(monkeypatch):
    """Fitted coefficients of the block products equal those of whole float64 copies (the
    previous CPU path, still the device path) to rounding (X^T r sums in another order);
    margins bit for bit."""
    import glmix.fixed_effect as fe

    rng = np.random.default_rng(1)
    m = _random_csr(rng, 30_000, 40, 5)
    y = (rng.random(m.shape[0]) < 0.3).astype(float)
    w = rng.random(m.shape[0]) + 0.5
    fast = FixedEffect(l2=2.0, tol=1e-8).fit(m, y, sample_weight=w)
    copies = lambda x, dt: (fe._to_torch(x, "cpu", dt), fe._to_torch(x.T.tocsr(), "cpu", dt))  # noqa: E731
    monkeypatch.setattr(fe._BlockCsr, "pair", copies)  # _Problem: whole float64 copies
    slow = FixedEffect(l2=2.0, tol=1e-8).fit(m, y, sample_weight=w)
    assert slow.fit_stats_["function_evaluations"] > 5
    np.testing.assert_allclose(fast.coef_, slow.coef_, rtol=1e-10, atol=1e-13)
    z = fast.decision_function(m)  # row blocks of 2**18 rows
    z_small = fast._margin_np(fe.as_design(m, "X"), chunk_rows=1000)
    whole = m.astype(np.float64) @ fast.coef_[:-1] + fast.coef_[-1]
    np.testing.assert_array_equal(z, whole)
    np.testing.assert_array_equal(z_small, whole)
