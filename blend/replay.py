"""Offline replay: how a linear blend would have ranked what learners actually engaged with.

For each held-out engagement (a candidate the learner went on to watch), its rank among that
learner's candidates under the blended score s = X w (X: standardized features). Objectives:

    mean_rank         mean over engagements of the rank (lower is better)
    expected_clicks   mean over engagements of ctr(rank), ctr = a * rank ** -b a click-by-
                      position curve fitted by maximum likelihood on the impressions'
                      `position` column, positions without a click included (higher is better)
    ndcg              mean over engaged learners of DCG / ideal DCG, gain 1 / log2(1 + rank)
                      per engagement, untruncated (higher is better): the offline metric's
                      own shape, each learner counted once however many engagements they have

With engagement weights (`ReplaySet.from_candidates(..., weights=)`, e.g. the watch-time
sample weights): the mean rank and expected clicks are weighted means over engagements, and
ndcg takes each engagement's weight as its gain (graded relevance; the ideal DCG sorts the
learner's gains). Equal weights give the unweighted objectives.

`tune_weights` minimizes the objective over w with scipy, three ways:

    gradient                L-BFGS on a smooth surrogate: the objective of the soft rank
                            1 + sum_j sigmoid((s_j - s_i) / tau) over the learner's other
                            candidates j (for ndcg: ApproxNDCG, Qin et al. 2010), with its
                            exact gradient (vectorized over all (engagement, candidate) pairs)
    nelder_mead             Nelder-Mead on the exact (step) objective, as a check
    differential_evolution  differential evolution on the exact objective, as a check (the
                            genetic-algorithm baseline of Stack Overflow's job-matching replay)

Ranking is invariant to scaling w, so the first weight is held at its initial value (it
should be a strong feature, e.g. the two-tower score) and the others are optimized; the
surrogate scores with w / |w|, so it cannot improve by growing w either.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import expit
from sklearn.linear_model import PoissonRegressor

from watchlog.candidates import learner_bounds

__all__ = [
    "OBJECTIVES",
    "METHODS",
    "PositionCurve",
    "ReplaySet",
    "TuneResult",
    "tune_weights",
]

OBJECTIVES = ("mean_rank", "expected_clicks", "ndcg")
METHODS = ("gradient", "nelder_mead", "differential_evolution")


@dataclass(frozen=True)
class PositionCurve:
    """ctr(position) = a * position ** -b, fitted to observed click rates by position.

    observed: position -> (impressions, clicks) it was fitted on (empty for the default)."""

    a: float
    b: float
    observed: dict[int, tuple[int, int]] = field(default_factory=dict)
    source: str = "impressions"

    @classmethod
    def from_impressions(cls, events: pd.DataFrame, min_impressions: int = 100) -> PositionCurve:
        """Fit on impressions with a position and a click label; falls back to `default()`
        (a DCG-like 1 / log2(1 + position) shape) when there are none, when fewer than two
        positions have `min_impressions`, or when those have no click at all.

        The fit is maximum likelihood over every position with `min_impressions`, those
        without a click included (dropping them, as a least-squares fit of log ctr must,
        keeps only the lucky deep positions and flattens the curve): a Poisson regression
        of the click rate on log(position) weighted by impressions (scikit-learn's
        PoissonRegressor, unpenalized; its log link is the power law), i.e. clicks ~
        Poisson(impressions * a * position ** -b), close to the binomial likelihood at the
        small click rates of a slate."""
        if not {"impression", "position", "clicked"} <= set(events.columns):
            return cls.default()
        imp = events[events["impression"].to_numpy(bool)]
        imp = imp[imp["position"].notna().to_numpy() & imp["clicked"].notna().to_numpy()]
        if imp.empty:
            return cls.default()
        pos = imp["position"].to_numpy(np.int64)
        clicks = np.bincount(pos, weights=imp["clicked"].to_numpy(np.float64))
        shown = np.bincount(pos).astype(np.float64)
        p = np.flatnonzero((shown >= min_impressions) & (np.arange(len(shown)) > 0))
        if len(p) < 2 or clicks[p].sum() == 0:  # no slope to fit, or a rate of 0 everywhere
            return cls.default()
        fit = PoissonRegressor(alpha=0.0, tol=1e-10, max_iter=1_000)
        fit.fit(np.log(p)[:, None], clicks[p] / shown[p], sample_weight=shown[p])
        observed = {int(q): (int(shown[q]), int(clicks[q])) for q in p}
        return cls(float(np.exp(fit.intercept_)), float(-fit.coef_[0]), observed, "impressions")

    @classmethod
    def default(cls) -> PositionCurve:
        # 1 / log2(1 + r) is close to 1.0 * r ** -0.55 over ranks 1..200
        return cls(1.0, 0.55, {}, "default (no impressions with positions)")

    def __call__(self, rank: np.ndarray) -> np.ndarray:
        return self.a * np.power(rank, -self.b)

    def derivative(self, rank: np.ndarray) -> np.ndarray:
        return -self.b * self.a * np.power(rank, -self.b - 1.0)


@dataclass(frozen=True)
class ReplaySet:
    """X (n, p) standardized features of every candidate; group (n,) learner of each row;
    engaged (m,) row of each engagement; pair_i / pair_j: every (engagement, other candidate
    of its learner) pair as row indices, for the soft rank; weight (m,) each engagement's
    weight, None when they are all equal (the unweighted objectives, computed as such)."""

    X: np.ndarray
    group: np.ndarray
    engaged: np.ndarray
    pair_e: np.ndarray  # (P,) engagement number 0..m-1
    pair_j: np.ndarray  # (P,) candidate row
    features: tuple[str, ...]
    weight: np.ndarray | None = None  # (m,) > 0

    @classmethod
    def from_candidates(
        cls,
        candidates: pd.DataFrame,
        X: np.ndarray,
        labels: np.ndarray,
        features: Sequence[str],
        weights: np.ndarray | None = None,
    ) -> ReplaySet:
        """candidates: the table (learners contiguous); X: its standardized features (e.g.
        `LinearBlender._z`); labels: (n,) 1 where the learner engaged with the candidate;
        weights: optional (n,) finite >= 0 per candidate (a sample weight): only the engaged
        rows' count, and an engagement of weight 0 counts for nothing (it is left out)."""
        labels = np.asarray(labels)
        if labels.shape != (len(candidates),) or X.shape[0] != len(candidates):
            raise ValueError(
                f"ReplaySet: {len(candidates):,} candidates need as many labels and rows of X; "
                f"got labels {labels.shape}, X {X.shape}"
            )
        bounds = learner_bounds(candidates)
        sizes = np.diff(bounds)
        group = np.repeat(np.arange(len(sizes)), sizes)
        w = None if weights is None else engagement_weights(weights, len(candidates))
        engaged = np.flatnonzero((labels > 0) if w is None else (labels > 0) & (w > 0))
        if len(engaged) == 0:
            raise ValueError("ReplaySet: no engagement (of weight > 0) among the candidates")
        g = group[engaged]
        counts = sizes[g]  # each engagement pairs with every row of its learner
        pair_e = np.repeat(np.arange(len(engaged)), counts)
        start = np.repeat(bounds[g], counts)
        offset = np.arange(len(pair_e)) - np.repeat(np.cumsum(counts) - counts, counts)
        pair_j = start + offset
        keep = pair_j != engaged[pair_e]  # not itself
        if w is not None:
            w = w[engaged]
            w = None if w.min() == w.max() else w  # equal weights: the unweighted objectives
        return cls(X, group, engaged, pair_e[keep], pair_j[keep], tuple(features), w)

    @property
    def n_engagements(self) -> int:
        return len(self.engaged)

    @cached_property
    def pair_i(self) -> np.ndarray:
        """(P,) the engaged candidate's row of each pair (`engaged[pair_e]`), gathered once:
        every evaluation of the objective or its surrogate reads it."""
        return self.engaged[self.pair_e]

    @cached_property
    def ndcg_weights(self) -> np.ndarray:
        """(m,) weight of each engagement's discount in the ndcg objective: its gain / (its
        learner's ideal DCG x the number of engaged learners), so the weighted sum is the
        mean NDCG. Computed once: every surrogate evaluation of an L-BFGS run reads it."""
        learner = self.group[self.engaged]
        per_learner = np.bincount(learner)  # (n_learners,) engagements, 0 for most
        n_engaged = int((per_learner > 0).sum())
        if self.weight is None:  # gain 1: the ideal is the first n discounts
            ideal = np.cumsum(1.0 / np.log2(2.0 + np.arange(per_learner.max())))
            n = per_learner[learner]  # (m,) engagements of this engagement's learner
            return 1.0 / (ideal[n - 1] * n_engaged)
        # graded gains: each learner's gains sorted, best first, on the first discounts
        order = np.lexsort((-self.weight, learner))  # (m,) by learner, then gain descending
        first = np.cumsum(per_learner) - per_learner  # (n_learners,) a learner's first slot
        place = np.arange(len(order)) - first[learner[order]]  # 0-based ideal position
        ideal = np.bincount(
            learner[order], weights=self.weight[order] / np.log2(2.0 + place),
            minlength=len(per_learner),
        )  # fmt: skip
        return self.weight / (ideal[learner] * n_engaged)

    def _mean(self, values: np.ndarray) -> float:
        """The (weighted) mean over engagements of (m,) values."""
        if self.weight is None:
            return float(values.mean())
        return float(self.weight @ values / self.weight.sum())

    def _mean_grad(self, d: np.ndarray) -> np.ndarray:
        """(m,) the derivative of `_mean` of f(x) by each x, given d (m,) = f'(x)."""
        if self.weight is None:
            return d / self.n_engagements
        return d * (self.weight / self.weight.sum())

    def ranks(self, w: np.ndarray) -> np.ndarray:
        """(m,) exact rank of each engagement (1 = top), ties counted as half."""
        s = self.X @ np.asarray(w, dtype=np.float64)
        d = s[self.pair_j] - s[self.pair_i]
        above = (d > 0) + 0.5 * (d == 0)
        return 1.0 + np.bincount(self.pair_e, weights=above, minlength=self.n_engagements)

    def objective(self, w: np.ndarray, kind: str, curve: PositionCurve | None = None) -> float:
        """The exact objective, as a value to minimize (expected clicks are negated)."""
        r = self.ranks(w)
        if kind == "mean_rank":
            return self._mean(r)
        if kind == "ndcg":
            return -float(self.ndcg_weights @ (1.0 / np.log2(1.0 + r)))
        return -self._mean(_curve(curve)(r))

    def surrogate(
        self, w: np.ndarray, kind: str, tau: float, curve: PositionCurve | None = None
    ) -> tuple[float, np.ndarray]:
        """(value, gradient (p,)) of the soft-rank objective, to minimize.

        The scores use the unit vector u = w / |w|: the soft rank of X w would fall just by
        scaling w up (a sharper sigmoid), which is no better ranking."""
        norm = float(np.linalg.norm(w))
        u = w / norm
        s = self.X @ u
        d = (s[self.pair_j] - s[self.pair_i]) / tau  # (P,)
        sig = expit(d)
        soft = 1.0 + np.bincount(self.pair_e, weights=sig, minlength=self.n_engagements)
        m = self.n_engagements
        if kind == "mean_rank":
            value, outer = self._mean(soft), self._mean_grad(np.ones(m))
        elif kind == "ndcg":  # gain ln 2 / ln(1 + soft), its derivative below
            weight, log1p = self.ndcg_weights, np.log1p(soft)
            value = -float(weight @ (np.log(2.0) / log1p))
            outer = weight * np.log(2.0) / (log1p**2 * (1.0 + soft))
        else:
            c = _curve(curve)
            value, outer = -self._mean(c(soft)), -self._mean_grad(c.derivative(soft))
        # d soft_e / d w = sum_j sigmoid'(d) / tau * (x_j - x_e). The pairs' coefficients are
        # summed per row first, so the product is (n,) @ (n, p), not a (P, p) gather of X
        # (P = engagements x candidates: millions of rows)
        coef = outer[self.pair_e] * sig * (1.0 - sig) / tau  # (P,)
        n = self.X.shape[0]
        grad_u = np.bincount(self.pair_j, weights=coef, minlength=n) @ self.X
        grad_u -= np.bincount(self.pair_e, weights=coef, minlength=m) @ self.X[self.engaged]
        # through u = w / |w|: (I - u u^T) / |w|
        return float(value), (grad_u - u * (u @ grad_u)) / norm


def engagement_weights(weights, n: int, what: str = "ReplaySet weights") -> np.ndarray:
    """(n,) float64 weights, checked: one per candidate, finite, >= 0."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{what}: expected shape ({n},) (one per candidate), got {w.shape}")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise ValueError(
            f"{what}: must be finite and >= 0; {int(bad.sum()):,} of {n:,} are not, "
            f"e.g. {w[bad][:5].tolist()}"
        )
    return w


def _curve(curve: PositionCurve | None) -> PositionCurve:
    if curve is None:
        raise ValueError("objective 'expected_clicks' needs a PositionCurve")
    return curve


@dataclass(frozen=True)
class TuneResult:
    method: str
    weights: dict[str, float]
    objective: float  # the exact objective reached (mean rank, expected clicks or NDCG)
    seconds: float
    evaluations: int


def tune_weights(
    replay: ReplaySet,
    init: Sequence[float],
    *,
    objective: str = "mean_rank",
    method: str = "gradient",
    curve: PositionCurve | None = None,
    tau: float = 0.1,
    bound: float = 5.0,
    seed: int = 0,
    max_evaluations: int = 20_000,
) -> TuneResult:
    """Weights minimizing (mean_rank) or maximizing (expected_clicks, ndcg) the replay objective;
    weight 0 stays at init[0] (scale invariance), the others start at init (bounded to
    +-bound for differential evolution); with one feature there is nothing to tune and every
    method returns init. See the module docstring for the methods."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: must be one of {OBJECTIVES}, got {objective!r}")
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    w0 = np.asarray(init, dtype=np.float64)
    if w0.shape != (replay.X.shape[1],):
        raise ValueError(f"init: expected {replay.X.shape[1]} weights, got {w0.shape}")
    if not np.isfinite(w0).all() or w0[0] == 0:
        raise ValueError(
            f"init: weight 0 is held fixed (the ranking is scale-invariant), so it must be a "
            f"finite non-zero weight, and the others finite; got {w0.tolist()} (start from "
            "1.0 on the strongest feature)"
        )
    full = lambda v: np.r_[w0[0], v]  # noqa: E731
    exact = lambda v: replay.objective(full(v), objective, curve)  # noqa: E731
    start = time.perf_counter()
    if len(w0) == 1:  # one feature: weight 0 is fixed (scale invariance), nothing to tune
        v, evals = w0[1:], 0
    elif method == "gradient":
        evals = 0
        v = w0[1:].copy()
        # Anneal the temperature: a wide sigmoid first (smooth, global), then a sharp one.
        for t in (tau * 10.0, tau * 3.0, tau):

            def f(v, t=t):
                val, g = replay.surrogate(full(v), objective, t, curve)
                return val, g[1:]

            res = optimize.minimize(f, v, jac=True, method="L-BFGS-B")
            v, evals = res.x, evals + int(res.nfev)
    elif method == "nelder_mead":
        # The exact objective is a step function: scipy's default simplex (5% of each
        # coordinate, 0.00025 for a zero) would sit on one step. Start with steps of 0.5.
        simplex = np.vstack([w0[1:], w0[1:] + 0.5 * np.eye(len(w0) - 1)])
        res = optimize.minimize(
            exact, w0[1:], method="Nelder-Mead",
            options={"maxfev": max_evaluations, "xatol": 1e-3, "fatol": 1e-9,
                     "initial_simplex": simplex},
        )  # fmt: skip
        v, evals = res.x, int(res.nfev)
    else:
        bounds = [(-bound, bound)] * (len(w0) - 1)
        res = optimize.differential_evolution(
            exact, bounds, seed=seed, x0=np.clip(w0[1:], -bound, bound), polish=False,
            maxiter=max(1, max_evaluations // (15 * len(bounds))), tol=1e-6,
        )  # fmt: skip
        v, evals = res.x, int(res.nfev)
    seconds = time.perf_counter() - start
    w = full(v)
    value = replay.objective(w, objective, curve)
    return TuneResult(
        method,
        dict(zip(replay.features, map(float, w), strict=True)),
        value if objective == "mean_rank" else -value,
        seconds,
        evals,
    )
