"""The fixed effect: one weighted logistic regression over all rows, on a sparse design.

    minimize_beta  sum_i w_i [softplus(z_i) - y_i z_i] + l2/2 |beta_s|^2 + l1 |beta_s|_1,
    z_i = x_i . beta + o_i,  beta_s = every coefficient but the (unpenalized) intercept.

A weighted sum, so scikit-learn's C = 1 / l2. The optimizer sees it divided by the total
weight (same minimizer, gradients of order 1 whatever the row count).

Solvers, in torch on the device (sparse CSR matrix-vector products with int32 indices, the
transposed design kept as a second CSR, since torch's product with a transposed CSR view
(`X.t() @ r`) is far slower than with a stored transpose). On the CPU nothing is copied: X
is the design's own CSR, cast to the solver's dtype by row blocks as it multiplies
(`_BlockCsr`), and X^T r sums the same row blocks' transposed products
(`_TransposedBlocks`):
- "lbfgs" (l1 = 0): L-BFGS (scipy's L-BFGS-B driver on the host, every loss and gradient
  in torch on the device), stopping when max |gradient| of the normalized objective <= tol.
- "fista" (l1 > 0, elastic net): FISTA, i.e. accelerated proximal gradient (soft-thresholding
  for L1; the intercept is not thresholded), backtracking on the Lipschitz constant,
  adaptive restart when the objective goes up, and the best iterate kept, so the objective
  never ends above its start. Written here: torch has no proximal optimizer; OWL-QN would
  converge faster but is much more code to get right. Stops when max |gradient mapping| <= tol
  or when a plain proximal step no longer lowers the objective (its float precision).

Distributed (`comm`): each rank computes the loss and gradient of its block of rows and all
ranks sum them, so every rank takes the same steps. Variances on request: diag(H^-1) with the
dense p x p Hessian (p <= 20,000).
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator

from glmix._inputs import (
    INTERCEPT,
    Design,
    as_design,
    check_feature_names,
    check_labels,
    check_offset,
    check_weights,
    torch_dtype,
)
from glmix.distributed import LOCAL, Comm
from glmix.solvers import softplus

__all__ = ["FixedEffect"]

# float64 by default: in float32 the summed gradient over millions of rows has a noise
# floor near 1e-5, which stops L-BFGS early; the matrix-vector products cost about the same.
_DEFAULT_TOL = {"float32": 1e-4, "float64": 1e-9}
_MAX_VARIANCE_FEATURES = 20_000


def _to_torch(m, device, dtype):
    """A CSR (int32 indices when they fit) or dense torch matrix."""
    if isinstance(m, np.ndarray):
        return torch.from_numpy(m).to(device, dtype)
    idx = np.int32 if m.nnz < 2**31 and max(m.shape) < 2**31 else np.int64
    with warnings.catch_warnings():  # "beta support" / "invariant checks" notices
        warnings.simplefilter("ignore", UserWarning)
        t = torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(idx)),
            torch.from_numpy(m.indices.astype(idx)),
            torch.from_numpy(m.data).to(dtype),
            m.shape,
        )
    return t.to(device)


class _BlockCsr:
    """A scipy CSR (float32 or float64) times a torch vector on the CPU, computed in `dtype`
    as one torch CSR of that dtype computes it, without holding that copy: each block of rows
    (about `block` entries; a longer row is a block of its own) is cast into a scratch buffer
    and multiplied by torch's CSR kernel, into its rows of the output. Torch computes every row
    of a CSR product on its own, so the blocks give bit-identical results
    (tests/test_glmix_fixed_effect.py).
    Memory: the matrix's own arrays plus the scratch (`block` entries of dtype, 8 MB in
    float64, or the longest row's; X^T of `pair` uses it too; allocated on first use, dropped
    by `release`), instead of a float64 copy with its own indices (12 bytes per entry;
    float32 values are 4). Time: each product also casts every value once. CPU time and memory of a
    fit against whole float64 copies: `python -m benchmarks.bench_glmix_solver
    --fixed-effect` (benchmarks/results/glmix_fixed_effect.json)."""

    def __init__(self, m: sp.csr_matrix, dtype: torch.dtype, block: int = 1 << 20):
        self.m, self.shape, self.dtype = m, m.shape, dtype
        ptr = m.indptr.astype(np.int64)  # (rows + 1,)
        # block bounds: row 0, the rows holding entries block, 2 block, ..., the row count
        cuts = np.searchsorted(ptr, np.arange(block, m.nnz, block), "right") - 1
        bounds = np.unique(np.r_[0, cuts, m.shape[0]])
        self.blocks = []  # (entries a:e, rows lo:hi, crow (hi - lo + 1,) from 0, col (e - a,))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            a, e = int(ptr[lo]), int(ptr[hi])
            crow = torch.from_numpy((ptr[lo : hi + 1] - a).astype(np.int32))
            col = torch.from_numpy(m.indices[a:e].astype(np.int32, copy=False))  # a view
            self.blocks.append((a, e, int(lo), int(hi), crow, col))
        self.most = max((e - a for a, e, *_ in self.blocks), default=0)  # scratch entries
        self._scratch: torch.Tensor | None = None  # (>= most,) dtype, on first use

    @classmethod
    def pair(cls, m: sp.csr_matrix, dtype: torch.dtype) -> tuple[_BlockCsr, _TransposedBlocks]:
        """(X, X^T) of the CSR m: X^T multiplies by X's own row blocks and scratch, so no
        transposed copy is held."""
        X = cls(m, dtype)
        return X, _TransposedBlocks(X)

    @property
    def scratch(self) -> torch.Tensor:
        if self._scratch is None:
            self._scratch = torch.empty(self.most, dtype=self.dtype)
        return self._scratch

    def release(self) -> None:
        """Drop the scratch buffer (of the pair); the next product allocates it again."""
        self._scratch = None

    def mv(self, v: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """self @ v, into `out` ((rows,) of dtype) when given."""
        scratch = self.scratch
        if out is None:
            out = torch.empty(self.shape[0], dtype=self.dtype)  # (rows,)
        buf = scratch.numpy()
        with warnings.catch_warnings():  # "beta support" notice of sparse CSR tensors
            warnings.simplefilter("ignore", UserWarning)
            for a, e, lo, hi, crow, col in self.blocks:
                np.copyto(buf[: e - a], self.m.data[a:e])  # cast, no allocation
                csr = torch.sparse_csr_tensor(crow, col, scratch[: e - a], (hi - lo, self.shape[1]))
                torch.mv(csr, v, out=out[lo:hi])
        return out

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.mv(v)


class _TransposedBlocks:
    """X^T of a `_BlockCsr` X times a torch vector r, without a transposed copy of X:
    X^T r = the sum over X's row blocks of block^T r[rows], each block cast into a scratch
    buffer and multiplied by scipy as the CSC matrix its arrays are for the transpose. That
    product reads r in order and adds into a (p,) vector that stays in cache, where torch's
    product with a stored transpose (a (p, n) CSR: the intercept's row holds every row) reads
    r at random: 1.2x (1M rows) to 3.0x (4M rows) faster than a stored float64 transpose on one
    thread (`python -m benchmarks.bench_glmix_solver --fixed-effect`,
    benchmarks/results/glmix_fixed_effect.json). The blocks run on torch's thread count, a
    round of one block per thread at a time, and their products are added in block order: the
    same result, bit for bit, whatever the thread count. The sums run in another order than
    one CSR's, so results match a stored transpose to rounding, not bit for bit. Memory: X's
    arrays and scratch, one more scratch per extra thread (dropped by `release`) and one (p,)
    vector per thread."""

    def __init__(self, X: _BlockCsr):
        self.X, self.shape, self.dtype = X, (X.shape[1], X.shape[0]), X.dtype
        self._extra: list[np.ndarray] = []  # scratch of the threads past the first

    def _scratches(self, n: int) -> list[np.ndarray]:
        """n scratch buffers: X's own, then buffers of the same size kept for later calls."""
        like = self.X.scratch.numpy()
        while len(self._extra) < n - 1:
            self._extra.append(np.empty_like(like))
        return [like, *self._extra[: n - 1]]

    def mv(self, r: torch.Tensor) -> torch.Tensor:
        """X^T @ r: (p,) of dtype from r (n,) of dtype on the CPU."""
        X, out = self.X, torch.zeros(self.shape[0], dtype=self.dtype)  # (p,)
        blocks = X.blocks
        if not blocks:
            return out
        threads = max(1, min(torch.get_num_threads(), len(blocks)))
        total, rn, bufs = out.numpy(), r.numpy(), self._scratches(threads)
        parts = np.empty((threads, self.shape[0]), dtype=total.dtype)  # one round's products

        def product(k: int, i: int) -> None:  # block i into parts[k], with scratch k
            a, e, lo, hi, crow, col = blocks[i]
            buf = bufs[k][: e - a]
            np.copyto(buf, X.m.data[a:e])  # cast, no allocation
            # (p, hi - lo) CSC: the block's CSR arrays read as its transpose, no copy
            block_t = sp.csc_matrix(
                (buf, col.numpy(), crow.numpy()), shape=(self.shape[0], hi - lo)
            )
            parts[k] = block_t @ rn[lo:hi]

        pool = ThreadPoolExecutor(threads) if threads > 1 else None
        try:
            for start in range(0, len(blocks), threads):
                rnd = range(start, min(start + threads, len(blocks)))
                if pool is None:
                    product(0, start)
                else:  # scipy's product and numpy's cast release the GIL
                    list(pool.map(product, range(len(rnd)), rnd))
                for k in range(len(rnd)):  # in block order: the sequential sum, bit for bit
                    total += parts[k]
        finally:
            if pool is not None:
                pool.shutdown()
        return out

    def release(self) -> None:
        self._extra = []
        self.X.release()

    def __matmul__(self, r: torch.Tensor) -> torch.Tensor:
        return self.mv(r)


class _Problem:
    """Loss and gradient of one rank's rows, summed over ranks, normalized by total weight."""

    def __init__(self, design: Design, y, w, o, added: bool, pen, l1_mask, mean, comm, dev, dt):
        m = design.matrix
        if dev.type == "cpu" and sp.issparse(m):  # the design's arrays, cast by blocks
            self.X, self.XT = _BlockCsr.pair(m, dt)  # (n, p), (p, n)
        else:  # the device holds both in dt
            self.X = _to_torch(m, dev, dt)  # (n, p)
            self.XT = _to_torch(m.T if isinstance(m, np.ndarray) else m.T.tocsr(), dev, dt)
        T = lambda a: torch.as_tensor(a, device=dev, dtype=dt)  # noqa: E731
        self.y, self.w, self.o = T(y), T(w), T(o)
        self.p, self.added, self.comm = design.shape[1], added, comm
        total = torch.tensor([float(w.sum())], dtype=torch.float64)
        self.W = float(comm.allreduce_(total).item())  # total weight over all ranks
        self.pen, self.l1_mask, self.mean = T(pen), T(l1_mask), T(mean)
        self.n_evals = 0
        self._buffers: tuple[torch.Tensor, ...] | None = None

    def margins(self, beta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) X beta + o (+ the appended intercept); into `out` on the CPU blocks."""
        if not self.p:
            z = torch.zeros_like(self.y)
        elif isinstance(self.X, _BlockCsr):
            z = self.X.mv(beta[: self.p], out)
        else:
            z = self.X @ beta[: self.p]
        z += self.o
        z += beta[self.p] if self.added else 0.0
        return z

    def _work(self) -> tuple[torch.Tensor, ...]:
        """Three (n,) buffers for smooth, kept until `release` (the end of a fit): an
        evaluation then allocates no (n,) vector (it made ten, whose space glibc's heap kept,
        fragmented, once the fit was over)."""
        if self._buffers is None:
            self._buffers = tuple(torch.empty_like(self.y) for _ in range(3))
        return self._buffers

    def release(self) -> None:
        """Drop the buffers of a fit (the scratch and the three (n,) vectors), which coordinate
        descent would otherwise hold between fits."""
        self._buffers = None
        if isinstance(self.XT, _TransposedBlocks):  # X's scratch and the threads' ones
            self.XT.release()

    def smooth(self, beta: torch.Tensor, grad: bool = True):
        """(f, g): (loss + L2 / prior penalty) / W and its gradient (P,). In place: the same
        operations, in the same order, as w * (softplus(z) - y z) and w * (sigmoid(z) - y)."""
        self.n_evals += 1
        zbuf, t, u = self._work()
        z = self.margins(beta, zbuf)  # (n,)
        softplus(z, out=t)
        t -= torch.mul(self.y, z, out=u)
        t *= self.w
        loss = t.sum()
        g = None
        if grad:
            r = torch.sigmoid(z, out=u)  # (n,)
            r -= self.y
            r *= self.w
            parts = [self.XT @ r] if self.p else []
            if self.added:
                parts.append(r.sum().reshape(1))
            g = torch.cat(parts) if len(parts) > 1 else parts[0]
        if self.comm.distributed:
            buf = torch.cat([loss.reshape(1), g]) if grad else loss.reshape(1)
            buf = self.comm.allreduce_(buf)
            loss, g = buf[0], (buf[1:] if grad else None)
        diff = beta - self.mean
        f = (loss + 0.5 * (self.pen * diff.square()).sum()) / self.W
        if grad:
            g = (g + self.pen * diff) / self.W
        return f, g


class FixedEffect(BaseEstimator):
    """L2 / elastic-net weighted logistic regression with an unpenalized intercept.

    l2, l1: penalties on the summed weighted loss (sklearn C = 1 / l2; l1 > 0 uses FISTA).
    fit_intercept: the design's "intercept" column if it has one, else an appended one.
    solver: "auto" (lbfgs when l1 = 0, else fista), "lbfgs" or "fista".
    tol: stopping tolerance on the normalized gradient (default 1e-9 float64, 1e-4 float32).
    dtype: "float64" (default: see _DEFAULT_TOL) or "float32"; history_size: L-BFGS memory.
    variances: also compute coef_var_ = diag(H^-1) (dense Hessian; p <= 20,000).

    Fitted: coef_ (n_features,) float64 aligned with feature_names_ (the design's names plus
    "intercept" when appended), intercept_index_ (-1: none), coef_var_ or None, fit_stats_.
    """

    def __init__(
        self,
        l2: float = 1.0,
        l1: float = 0.0,
        fit_intercept: bool = True,
        solver: str = "auto",
        tol: float | None = None,
        max_iter: int = 500,
        history_size: int = 20,
        variances: bool = False,
        dtype: str = "float64",
        device: str = "auto",
    ):
        self.l2 = l2
        self.l1 = l1
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.history_size = history_size
        self.variances = variances
        self.dtype = dtype
        self.device = device

    def _check_params(self) -> str:  # the solver to use
        for name in ("l2", "l1"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"FixedEffect.{name}: must be finite and >= 0; got {v!r}")
        if self.solver not in ("auto", "lbfgs", "fista"):
            raise ValueError(f"FixedEffect.solver: 'auto', 'lbfgs' or 'fista'; got {self.solver!r}")
        if self.solver == "lbfgs" and self.l1 > 0:
            raise ValueError("FixedEffect: l1 > 0 needs solver='fista' (or 'auto')")
        torch_dtype(self.dtype)
        return ("fista" if self.l1 > 0 else "lbfgs") if self.solver == "auto" else self.solver

    def fit(
        self,
        X,
        y,
        sample_weight=None,
        offset=None,
        *,
        prior: FixedEffect | None = None,
        init: np.ndarray | None = None,
        comm: Comm = LOCAL,
    ) -> FixedEffect:
        """X: (n, p) FeatureBlock / CSR / dense; y: (n,) 0/1; sample_weight: (n,) >= 0;
        offset: (n,). prior: a fitted FixedEffect with the same features: shrink toward its
        coefficients with precision 1 / its coef_var_ (or l2 when it has none); the
        intercept then shrinks toward the prior's too. init: starting coefficients.
        comm: this rank's block of rows; losses and gradients summed over ranks."""
        y = check_labels(y)
        n = len(y)
        design = as_design(X, "FixedEffect X", n)
        prob = self._prepare(design, y, check_weights(sample_weight, n), prior=prior, comm=comm)
        self._fit_prepared(prob, check_offset(offset, n), init=init)
        return self

    def _prepare(self, design: Design, y, w, *, prior=None, comm: Comm = LOCAL) -> _Problem:
        """Layout, penalties and the device copy of this rank's rows (reused across passes)."""
        self._solver = self._check_params()
        self._set_layout(design)
        if self.fit_intercept and prior is None:
            pos, tot = float((w * y).sum()), float(w.sum())  # every rank holds every row
            if pos <= 0 or pos >= tot:
                raise ValueError(
                    f"y: all {len(y):,} positively weighted labels are {int(pos > 0)}; the "
                    "fixed effect's unpenalized intercept has no finite optimum with one class"
                )
        P = len(self.feature_names_)
        pen = np.full(P, float(self.l2))
        l1_mask = np.ones(P)
        mean = np.zeros(P)
        if self.intercept_index_ >= 0:
            pen[self.intercept_index_] = 0.0
            l1_mask[self.intercept_index_] = 0.0
        if prior is not None:
            if tuple(prior.feature_names_) != self.feature_names_:
                raise ValueError("FixedEffect.fit(prior=...): the prior has other feature names")
            mean = prior.coef_.astype(np.float64)
            if prior.coef_var_ is not None:
                pen = 1.0 / np.maximum(prior.coef_var_, 1e-12)
        self._pen, self._mean, self._l1_mask = pen, mean, l1_mask
        rows = comm.row_block(len(y))
        block = design if rows == slice(0, len(y)) else design.rows(rows)  # no copy when whole
        prob = _Problem(
            block,
            y[rows],
            w[rows],
            np.zeros(len(y[rows])),
            self.intercept_added_,
            pen,
            l1_mask,
            mean,
            comm,
            self._device(),
            torch_dtype(self.dtype),
        )
        prob.rows, prob.block, prob.w_np = rows, block, w[rows]
        return prob

    def _fit_prepared(self, prob: _Problem, offset: np.ndarray, *, init=None) -> None:
        t0 = time.perf_counter()
        o = offset[prob.rows]
        prob.o = torch.as_tensor(o, device=prob.y.device, dtype=prob.y.dtype)
        prob.n_evals = 0
        P = len(self.feature_names_)
        start = np.zeros(P) if init is None else np.asarray(init, dtype=np.float64)
        beta0 = torch.as_tensor(start, device=prob.y.device, dtype=prob.y.dtype)
        tol = float(self.tol) if self.tol is not None else _DEFAULT_TOL[self.dtype]
        try:
            if self._solver == "lbfgs":
                beta, info = self._lbfgs(prob, beta0, tol)
            else:
                beta, info = self._fista(prob, beta0, tol)
        finally:
            prob.release()
        self.coef_ = beta.detach().cpu().numpy().astype(np.float64)
        self.coef_var_ = (
            self._variances(prob.block, prob.w_np, o, self._pen, prob.comm)
            if self.variances
            else None
        )
        self.fit_stats_ = {
            "solver": self._solver,
            **info,
            "function_evaluations": prob.n_evals,
            "rows": int(len(o)),
            "seconds": time.perf_counter() - t0,
        }

    def _set_layout(self, design: Design) -> None:
        names = list(design.names)
        added = bool(self.fit_intercept) and INTERCEPT not in names
        self.n_features_in_ = design.shape[1]
        self.feature_names_ = tuple(names + ([INTERCEPT] if added else []))
        self.intercept_added_ = added
        self.intercept_index_ = self.feature_names_.index(INTERCEPT) if self.fit_intercept else -1

    def _device(self) -> torch.device:
        from evaluation import resolve_device

        return resolve_device(self.device)

    # ---- solvers ------------------------------------------------------------------------------
    def _lbfgs(self, prob: _Problem, beta0: torch.Tensor, tol: float):
        """scipy's L-BFGS-B drives the iteration (p-vectors on the host); every loss and
        gradient is computed in torch on the device. torch.optim.LBFGS would do the same,
        but constructing any torch optimizer imports torch._dynamo (~5 s per process)."""
        from scipy.optimize import minimize

        dev, dt = beta0.device, beta0.dtype

        def fg(b: np.ndarray):
            f, g = prob.smooth(torch.from_numpy(b).to(dev, dt))
            return float(f), g.detach().cpu().numpy().astype(np.float64)

        res = minimize(
            fg,
            beta0.cpu().numpy().astype(np.float64),
            jac=True,
            method="L-BFGS-B",
            options={
                "maxiter": int(self.max_iter),
                "maxfun": 2 * int(self.max_iter),
                "gtol": tol,
                "ftol": 64 * float(torch.finfo(dt).eps),
                "maxcor": int(self.history_size),
            },
        )
        f, g = fg(res.x)
        gmax = float(np.abs(g).max()) if g.size else 0.0
        return torch.from_numpy(res.x).to(dev, dt), {
            "iterations": int(res.nit),
            # scipy's success: max |gradient| <= tol, or no relative decrease of f above
            # its float precision (ftol = 64 eps), which also means done
            "converged": bool(res.success),
            "max_abs_gradient": gmax,
            "objective_normalized": f,
            "message": str(res.message),
        }

    def _fista(self, prob: _Problem, beta0: torch.Tensor, tol: float):
        lam = float(self.l1) / prob.W * prob.l1_mask  # (P,) threshold per unit step

        def total(b, f_smooth):
            return float(f_smooth) + float((lam * b.abs()).sum())

        def prox(v, step):
            return torch.sign(v) * torch.clamp(v.abs() - step * lam, min=0.0)

        x = beta0.clone()
        fx, _ = prob.smooth(x, grad=False)
        best, best_F = x.clone(), total(x, fx)
        F_x = best_F
        yk, t, L = x.clone(), 1.0, 1.0
        converged, it, gm = False, 0, float("inf")
        for it in range(1, int(self.max_iter) + 1):  # noqa: B007
            fy, gy = prob.smooth(yk)
            while True:  # backtracking on the Lipschitz constant
                x_new = prox(yk - gy / L, 1.0 / L)
                diff = x_new - yk
                fn, _ = prob.smooth(x_new, grad=False)
                if float(fn) <= float(fy) + float((gy * diff).sum()) + 0.5 * L * float(
                    diff.square().sum()
                ) + 1e-12 * abs(float(fy)):
                    break
                L *= 2.0
            F_new = total(x_new, fn)
            gm = float((L * diff).abs().max())  # gradient mapping at yk
            if F_new < best_F:
                best, best_F = x_new.clone(), F_new
            if gm <= tol:
                converged = True
                break
            if F_new > F_x:  # adaptive restart: drop the momentum
                if t == 1.0:  # a plain proximal step from x found no decrease: float precision
                    converged = True
                    break
                yk, t = x.clone(), 1.0
                continue
            t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
            yk = x_new + ((t - 1.0) / t_next) * (x_new - x)
            x, F_x, t = x_new, F_new, t_next
            L *= 0.9  # let the step grow back
        return best, {
            "iterations": it,
            "converged": converged,
            "max_abs_gradient_mapping": gm,
            "objective_normalized": best_F,
        }

    def _variances(self, design: Design, w, o, pen, comm: Comm) -> np.ndarray:
        P = len(self.feature_names_)
        if P > _MAX_VARIANCE_FEATURES:
            raise ValueError(
                f"FixedEffect(variances=True): {P:,} features; the dense Hessian is limited to "
                f"{_MAX_VARIANCE_FEATURES:,}"
            )
        z = self._margin_np(design) + o
        p = 1.0 / (1.0 + np.exp(-z))
        s = np.sqrt(w * p * (1 - p))
        m = design.matrix
        Xs = (sp.diags(s) @ m) if sp.issparse(m) else m * s[:, None]
        if self.intercept_added_:
            Xs = sp.hstack([Xs, sp.csr_matrix(s[:, None])]) if sp.issparse(Xs) else np.c_[Xs, s]
        H = Xs.T @ Xs
        H = H.toarray() if sp.issparse(H) else np.asarray(H)
        H = comm.allreduce_array(H.astype(np.float64)) + np.diag(pen)
        return np.diag(np.linalg.inv(H)).copy()

    # ---- scores -------------------------------------------------------------------------------
    def penalty(self) -> float:
        """l2/2 |beta_s - mean|^2 (or the prior's precision-weighted form) + l1 |beta_s|_1."""
        d = self.coef_ - self._mean
        return float(
            0.5 * (self._pen * d * d).sum() + self.l1 * (self._l1_mask * np.abs(self.coef_)).sum()
        )

    def _margin_np(self, design: Design, chunk_rows: int = 1 << 18) -> np.ndarray:
        p, m = self.n_features_in_, design.matrix
        if p and sp.issparse(m):  # by row blocks: scipy upcasts a float32 block, not all of m
            z = np.empty(m.shape[0])  # (n,); each row's sum is the whole product's
            for lo in range(0, m.shape[0], chunk_rows):
                z[lo : lo + chunk_rows] = m[lo : lo + chunk_rows] @ self.coef_[:p]
        else:
            z = m @ self.coef_[:p] if p else np.zeros(design.shape[0])
            z = np.asarray(z, dtype=np.float64).reshape(-1)
        return z + (self.coef_[p] if self.intercept_added_ else 0.0)

    def _check_design(self, design: Design) -> Design:
        if not hasattr(self, "coef_"):
            raise RuntimeError("FixedEffect is not fitted: call fit first")
        if design.shape[1] != self.n_features_in_:
            raise ValueError(
                f"FixedEffect X: fitted on {self.n_features_in_} features; got {design.shape[1]}"
            )
        check_feature_names(design, self.feature_names_, self.intercept_added_, "FixedEffect X")
        return design

    def decision_function(self, X) -> np.ndarray:
        """(n,) float64 x_i . coef (+ the appended intercept)."""
        return self._margin_np(self._check_design(as_design(X, "FixedEffect X")))
