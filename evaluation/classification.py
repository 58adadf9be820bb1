"""Classification metrics for response models (e.g. GLMix click / watch predictions).

AUC, weighted, ties as in sklearn's `roc_auc_score` (trapezoids over tied thresholds):
    AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j]) / (W_pos W_neg)
computed by sorting once and grouping equal scores: each group g adds
    wpos_g * (W_neg below g + 0.5 wneg_g).
With unit weights this is the Mann-Whitney U statistic with tie-averaged ranks.
Per-entity AUC sorts by (entity, score) and runs the same sums within each entity, so all
entities are done at once, O(n log n), no loop over entities.
`entity_bootstrap_auc` resamples entities (learners): the rows of one learner are not
independent draws, so an interval over rows would be too narrow. Each replicate is the
weighted AUC with a row's weight = the times its entity was drawn, from one sort of the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from evaluation._checks import as_1d, check_choice, check_finite, few
from evaluation.bootstrap import DEFAULT_MAX_ELEMENTS, BootstrapCI, percentile_interval

__all__ = [
    "EntityAUC", "auc", "calibration_table", "entity_bootstrap_auc", "log_loss", "per_entity_auc"
]  # fmt: skip


def _labels(y_true: Any, n: int | None = None) -> np.ndarray:
    y = as_1d("y_true", y_true, length=n)
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(
            f"y_true: labels must be 0/1 (or bool); {int(bad.sum()):,} are not "
            f"(e.g. {few(np.unique(y[bad]))})"
        )
    return y.astype(np.float64)


def _scores(name: str, x: Any, n: int) -> np.ndarray:
    s = as_1d(name, x, dtype=np.float64, length=n)
    check_finite(name, s)
    return s


def _weights(sample_weight: Any, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    w = _scores("sample_weight", sample_weight, n)
    if (w < 0).any():
        raise ValueError(f"sample_weight: must be >= 0; {int((w < 0).sum()):,} are negative")
    return w


def _grouped_auc(
    codes: np.ndarray, y: np.ndarray, s: np.ndarray, w: np.ndarray, n_entities: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per entity: (AUC numerator, positive weight, negative weight), each (n_entities,)."""
    order = np.lexsort((s, codes))  # by entity, then score ascending
    c, s, y, w = codes[order], s[order], y[order], w[order]
    new = np.ones(c.size, dtype=bool)  # start of a run of equal (entity, score)
    new[1:] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    g = np.cumsum(new) - 1  # (n,) tie-group id
    wpos = np.bincount(g, weights=w * y)  # (n_groups,)
    wneg = np.bincount(g, weights=w * (1.0 - y))
    ent = c[new]  # (n_groups,) entity of each group, non-decreasing
    below = np.cumsum(wneg) - wneg  # negative weight in earlier groups, all entities
    first = np.ones(ent.size, dtype=bool)
    first[1:] = ent[1:] != ent[:-1]
    start_of = np.maximum.accumulate(np.where(first, np.arange(ent.size), 0))
    below -= below[start_of]  # ... restricted to the group's own entity
    num = np.bincount(ent, weights=wpos * (below + 0.5 * wneg), minlength=n_entities)
    wp = np.bincount(ent, weights=wpos, minlength=n_entities)
    wn = np.bincount(ent, weights=wneg, minlength=n_entities)
    return num, wp, wn


def auc(y_true: Any, y_score: Any, sample_weight: Any = None) -> float:
    """Area under the ROC curve (weighted; ties count one half, as sklearn). Raises when
    y_true holds a single class (or one class has zero total weight)."""
    y = _labels(y_true)
    s = _scores("y_score", y_score, y.shape[0])
    w = _weights(sample_weight, y.shape[0])
    num, wp, wn = _grouped_auc(np.zeros(y.shape[0], dtype=np.int64), y, s, w, 1)
    if wp[0] <= 0 or wn[0] <= 0:
        raise ValueError(
            f"y_true: AUC needs both classes with positive weight; positive weight {wp[0]:g}, "
            f"negative weight {wn[0]:g}"
        )
    return float(num[0] / (wp[0] * wn[0]))


@dataclass
class EntityAUC:
    """AUC per entity (e.g. per learner) and its averages.

    table: one row per entity: entity, n_rows, n_pos, n_neg, auc (NaN when skipped)
    mean: unweighted mean over entities with both classes
    row_weighted_mean: mean weighted by each entity's n_rows
    n_entities: entities seen; n_skipped_single_class: those with one class only
    """

    table: pd.DataFrame
    mean: float
    row_weighted_mean: float
    n_entities: int
    n_skipped_single_class: int


def per_entity_auc(entity: Any, y_true: Any, y_score: Any, sample_weight: Any = None) -> EntityAUC:
    """AUC within each entity, then averaged; entities with a single class (or a class of
    zero total weight) are skipped and counted. Fully vectorized (see module docstring)."""
    y = _labels(y_true)
    n = y.shape[0]
    s = _scores("y_score", y_score, n)
    w = _weights(sample_weight, n)
    ent = as_1d("entity", entity, length=n)
    codes, uniques = pd.factorize(ent, sort=True)
    if (codes < 0).any():
        raise ValueError(f"entity: {int((codes < 0).sum()):,} missing value(s)")
    m = len(uniques)
    num, wp, wn = _grouped_auc(codes.astype(np.int64), y, s, w, m)
    valid = (wp > 0) & (wn > 0)
    auc_e = np.full(m, np.nan)
    np.divide(num, wp * wn, out=auc_e, where=valid)
    n_rows = np.bincount(codes, minlength=m)
    n_pos = np.bincount(codes, weights=y, minlength=m).astype(np.int64)
    table = pd.DataFrame(
        {"entity": uniques, "n_rows": n_rows, "n_pos": n_pos, "n_neg": n_rows - n_pos, "auc": auc_e}
    )
    nan = float("nan")
    mean = float(auc_e[valid].mean()) if valid.any() else nan
    rw = float(np.average(auc_e[valid], weights=n_rows[valid])) if valid.any() else nan
    return EntityAUC(table, mean, rw, m, int((~valid).sum()))


def entity_bootstrap_auc(
    entity: Any,
    y_true: Any,
    y_score: Any,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int | np.random.Generator = 0,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> BootstrapCI:
    """The AUC of all rows (`mean`) and its percentile-bootstrap interval over entities: each
    replicate draws the n entities with replacement and takes every row of each drawn one
    (module docstring). `n` of the result counts entities. A replicate whose draw holds one
    class only has no AUC and is left out of the quantiles; when more than 5% of them do, one
    class sits in too few entities for an interval, and it raises."""
    y = _labels(y_true)
    n = y.shape[0]
    s = _scores("y_score", y_score, n)
    ent = as_1d("entity", entity, length=n)
    codes, uniques = pd.factorize(ent, sort=True)
    if (codes < 0).any():
        raise ValueError(f"entity: {int((codes < 0).sum()):,} missing value(s)")
    if not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot: must be a positive int; got {n_boot!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci: must be in (0, 1); got {ci!r}")
    point = auc(y, s)  # also: both classes present
    m = len(uniques)
    order = np.argsort(s, kind="stable")  # scores ascending, once for every replicate
    s, y, codes = s[order], y[order], codes[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # (n_groups,) tie-group starts
    rng = np.random.default_rng(seed)
    out = np.empty(int(n_boot))
    step = max(1, int(max_elements) // max(n, m))
    for lo in range(0, int(n_boot), step):
        c = min(step, int(n_boot) - lo)
        draws = rng.integers(0, m, size=(c, m)) + m * np.arange(c)[:, None]  # (c, m)
        counts = np.bincount(draws.ravel(), minlength=c * m).reshape(c, m).astype(np.float64)
        w = counts[:, codes]  # (c, n) row weights of each replicate
        wpos = np.add.reduceat(w * y, starts, axis=1)  # (c, n_groups)
        wneg = np.add.reduceat(w, starts, axis=1) - wpos
        below = np.cumsum(wneg, axis=1) - wneg  # negative weight in lower-scored groups
        num = (wpos * (below + 0.5 * wneg)).sum(axis=1)
        den = wpos.sum(axis=1) * wneg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo : lo + c] = np.where(den > 0, num / den, np.nan)
    ok = ~np.isnan(out)
    if (~ok).sum() > 0.05 * out.size:
        raise ValueError(
            f"entity: {int((~ok).sum()):,} of {out.size:,} bootstrap draws of {m:,} entities "
            "hold one class only; too few entities with both classes for an interval"
        )
    low, high = percentile_interval(out[ok], ci)
    return BootstrapCI(point, low, high, ci, m, int(n_boot))


def log_loss(y_true: Any, y_prob: Any, sample_weight: Any = None, eps: float = 1e-15) -> float:
    """Weighted mean of -(y log p + (1 - y) log(1 - p)), p clipped to [eps, 1 - eps]."""
    y = _labels(y_true)
    p = _scores("y_prob", y_prob, y.shape[0])
    _check_prob(p)
    w = _weights(sample_weight, y.shape[0])
    if w.sum() <= 0:
        raise ValueError("sample_weight: total weight must be positive")
    p = np.clip(p, eps, 1.0 - eps)
    loss = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return float(np.sum(w * loss) / w.sum())


def _check_prob(p: np.ndarray) -> None:
    bad = (p < 0) | (p > 1)
    if bad.any():
        raise ValueError(
            f"y_prob: probabilities must be in [0, 1]; {int(bad.sum()):,} are not "
            f"(e.g. {few(p[bad])})"
        )


def calibration_table(
    y_true: Any,
    y_prob: Any,
    sample_weight: Any = None,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> pd.DataFrame:
    """Reliability table: bins of predicted probability, and per bin
    count, weight, mean_predicted = sum(w p) / sum(w), observed_rate = sum(w y) / sum(w).

    "uniform": n_bins equal-width bins on [0, 1]; "quantile": edges at quantiles of y_prob
    (repeated edges merge, so there may be fewer bins). Bins are [lower, upper), the last one
    closed. Empty bins have count 0 and NaN means.
    """
    check_choice("strategy", strategy, ("uniform", "quantile"))
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins: must be a positive int; got {n_bins!r}")
    y = _labels(y_true)
    p = _scores("y_prob", y_prob, y.shape[0])
    _check_prob(p)
    w = _weights(sample_weight, y.shape[0])
    if strategy == "uniform" or p.size == 0:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1)))
        edges = edges if edges.size > 1 else np.array([edges[0], edges[0]])
    nb = edges.size - 1
    b = np.searchsorted(edges[1:-1], p, side="right")  # (n,) bin of each prediction
    count = np.bincount(b, minlength=nb)
    weight = np.bincount(b, weights=w, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(b, weights=w * p, minlength=nb) / weight
        observed = np.bincount(b, weights=w * y, minlength=nb) / weight
    return pd.DataFrame(
        {
            "bin": np.arange(nb),
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count,
            "weight": weight,
            "mean_predicted": np.where(weight > 0, mean_pred, np.nan),
            "observed_rate": np.where(weight > 0, observed, np.nan),
        }
    )
