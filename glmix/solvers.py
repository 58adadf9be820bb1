"""Batched damped Newton for many small weighted L2 logistic regressions with offsets.

For every entity b of a batch (rows r < R, features f < F), all at once on the device:

    minimize_beta  L_b(beta) = sum_r w_br [softplus(z_br) - y_br z_br]
                               + 1/2 sum_f lam_bf (beta_f - mu_bf)^2,
    z_br = x_br . beta + o_br.

lam is the per-entity, per-feature penalty (L2 on slopes, a separate one - possibly 0 - on
the intercept, or a prior's precision 1/variance with mu its mean for incremental training).

Padding: the caller pads every entity of a batch to R rows and F features. A padded row has
w = 0 (contributes nothing); a padded feature has x = 0 and lam = 1, mu = 0, so it stays 0.

Each iteration, for the entities still in the batch:
  g = X^T (w (p - y)) + lam (beta - mu),  H = X^T diag(w p (1 - p)) X + diag(lam)   (B, F, F)
  d = -H^{-1} g by batched Cholesky (H is positive definite whenever every lam > 0, or the
      data pin the unpenalized coefficients; a failed factorization is retried with jitter)
  an entity whose full step is small (max |d| <= tol) takes it and is done: near the optimum
      Newton converges quadratically, so its error is then O(tol^2);
  the others run a batched backtracking line search (Armijo): every entity starts at t = 1
      and halves its own t until its objective decreases enough; only the entities that
      failed are evaluated again. An entity that finds no decrease in `max_halvings` halvings
      is at the float precision of its objective: it keeps its coefficients and is reported
      as `stalled`.
Done entities leave the batch (the batch tensors are compacted), so later iterations cost
only what the slow entities need.

Variances on request: diag(H^{-1}) at the solution (the Laplace approximation's marginal
variances, Photon ML's "FULL" variance type).

The design is passed transposed, XT (B, F, R): features first, rows contiguous, so X^T S X is
one plain batched GEMM (cheaper than transposing a (B, R, F) tensor on the fly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["NewtonResult", "newton_logistic", "batch_objective", "softplus"]


def softplus(z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """log(1 + exp(z)), one fused kernel (into `out` when given, the same kernel). Above
    z = 20 torch returns z itself: off by log1p(exp(-20)) = 2e-9 per row, far below the
    objective's rounding in float32 and immaterial to the minimizer (the gradient uses the
    exact sigmoid)."""
    if out is None:
        return torch.nn.functional.softplus(z)
    return torch.ops.aten.softplus.out(z, 1, 20, out=out)  # F.softplus's beta, threshold


def batch_objective(z, y, w, beta, penalty, mean) -> torch.Tensor:
    """(B,) weighted logistic loss of margins z (B, R) plus the penalty of beta (B, F)."""
    loss = (w * (softplus(z) - y * z)).sum(1)
    return loss + 0.5 * (penalty * (beta - mean).square()).sum(1)


@dataclass
class NewtonResult:
    """Per entity of the batch: coef (B, F), objective (B,), n_iter (B,) int32, converged
    (B,) bool (last full Newton step had max |d| <= tol), stalled (B,) bool (no decrease
    found at float precision before converging), variance (B, F) diag(H^-1) or None."""

    coef: torch.Tensor
    objective: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor
    stalled: torch.Tensor
    variance: torch.Tensor | None = None


def _margins(XT, beta, offset):
    return torch.bmm(beta.unsqueeze(1), XT).squeeze(1) + offset  # (B, R)


def _factor(XT, w, p, penalty, buf: torch.Tensor | None = None) -> torch.Tensor:
    """Cholesky factor of H = X^T diag(w p (1-p)) X + diag(penalty): (B, F, F); p = sigmoid(z).
    buf: scratch of at least XT's size for X^T S (reused: a fresh (B, F, R) tensor every
    iteration costs as much as the product itself)."""
    s = w * p * (1 - p)  # (B, R)
    XS = (
        torch.mul(XT, s.unsqueeze(1), out=buf[: XT.shape[0]])
        if buf is not None
        else XT * s.unsqueeze(1)
    )
    H = torch.bmm(XS, XT.transpose(1, 2))  # (B, F, F)
    H.diagonal(dim1=1, dim2=2).add_(penalty)
    L, info = torch.linalg.cholesky_ex(H)
    bad = info > 0
    if bad.any():  # numerically singular (e.g. an unpenalized intercept, saturated p): jitter
        Hb = H[bad]
        scale = Hb.diagonal(dim1=1, dim2=2).abs().mean(1).clamp_min(1.0)
        for rel in (1e-8, 1e-6, 1e-4, 1e-2):
            Hj = Hb.clone()
            Hj.diagonal(dim1=1, dim2=2).add_((rel * scale).unsqueeze(1))
            Lj, info_j = torch.linalg.cholesky_ex(Hj)
            if not (info_j > 0).any():
                break
        L[bad] = Lj
    return L


def newton_logistic(
    XT: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    offset: torch.Tensor,
    penalty: torch.Tensor,
    mean: torch.Tensor | None = None,
    init: torch.Tensor | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    max_halvings: int = 30,
    armijo: float = 1e-4,
    variances: bool = False,
) -> NewtonResult:
    """Solve B weighted L2 logistic regressions at once (see the module docstring).

    XT: (B, F, R) transposed designs; y, w, offset: (B, R); penalty, mean, init: (B, F)
    (mean defaults to 0, init to mean). All on one device, one floating dtype.
    """
    B, F, R = XT.shape
    dev, dt = XT.device, XT.dtype
    if mean is None:
        mean = torch.zeros(B, F, device=dev, dtype=dt)
    beta = (mean if init is None else init).clone()
    out = NewtonResult(
        coef=beta.clone(),
        objective=torch.empty(B, device=dev, dtype=dt),
        n_iter=torch.zeros(B, dtype=torch.int32, device=dev),
        converged=torch.zeros(B, dtype=torch.bool, device=dev),
        stalled=torch.zeros(B, dtype=torch.bool, device=dev),
    )
    # a step that raises the objective by less than its rounding error is no step back
    fuzz_rel = 16 * torch.finfo(dt).eps
    idx = torch.arange(B, device=dev)  # batch position of each still-active entity
    Xa, ya, wa, oa, pa, ma = XT, y, w, offset, penalty, mean
    n_it = torch.zeros(B, dtype=torch.int32, device=dev)
    buf = torch.empty_like(XT)
    z = _margins(Xa, beta, oa)  # (Ba, R), then moved along with beta: z += t * X d
    f = batch_objective(z, ya, wa, beta, pa, ma)  # (Ba,)
    for _ in range(max_iter):
        p = torch.sigmoid(z)
        g = torch.bmm(Xa, (wa * (p - ya)).unsqueeze(2)).squeeze(2) + pa * (beta - ma)  # (Ba, F)
        L = _factor(Xa, wa, p, pa, buf)
        d = -torch.cholesky_solve(g.unsqueeze(2), L).squeeze(2)  # (Ba, F)
        small = d.abs().amax(1) <= tol
        Xd = _margins(Xa, d, torch.zeros_like(oa))  # (Ba, R): z moves by t * Xd
        slope = (g * d).sum(1)  # (Ba,) < 0: d is a descent direction
        fuzz = fuzz_rel * (f.abs() + 1)
        t = torch.ones_like(f)
        f_new = batch_objective(z + Xd, ya, wa, beta + d, pa, ma)
        todo = torch.nonzero(~small & (f_new > f + armijo * slope + fuzz)).squeeze(1)
        for _h in range(max_halvings):
            if todo.numel() == 0:
                break
            t[todo] *= 0.5
            tt = t[todo].unsqueeze(1)
            fz = batch_objective(
                z[todo] + tt * Xd[todo],
                ya[todo],
                wa[todo],
                beta[todo] + tt * d[todo],
                pa[todo],
                ma[todo],
            )
            ok = fz <= f[todo] + armijo * t[todo] * slope[todo] + fuzz[todo]
            f_new[todo[ok]] = fz[ok]
            todo = todo[~ok]
        failed = torch.zeros_like(small)
        failed[todo] = True
        t[todo] = 0.0  # no acceptable step: keep the coefficients
        f_new[todo] = f[todo]
        beta = beta + t.unsqueeze(1) * d
        z = z + t.unsqueeze(1) * Xd
        f = f_new
        n_it += 1
        done = small | failed
        if done.any():
            di = idx[done]
            out.coef[di] = beta[done]
            out.objective[di] = f_new[done]
            out.n_iter[di] = n_it[done]
            out.converged[di] = small[done]
            out.stalled[di] = failed[done] & ~small[done]
            keep = ~done
            idx, beta, n_it, z, f = idx[keep], beta[keep], n_it[keep], z[keep], f[keep]
            Xa, ya, wa, oa, pa, ma = (a[keep] for a in (Xa, ya, wa, oa, pa, ma))
            if idx.numel() == 0:
                break
    if idx.numel():  # ran out of iterations
        out.coef[idx] = beta
        out.objective[idx] = batch_objective(_margins(Xa, beta, oa), ya, wa, beta, pa, ma)
        out.n_iter[idx] = n_it
    if variances:
        L = _factor(XT, w, torch.sigmoid(_margins(XT, out.coef, offset)), penalty, buf)
        out.variance = torch.cholesky_inverse(L).diagonal(dim1=1, dim2=2).clone()
    return out
