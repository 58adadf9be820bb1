"""Classification metrics for response models (e.g. GLMix click / watch predictions).

AUC, weighted, ties as in sklearn's `roc_auc_score` (trapezoids over tied thresholds):
    AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j]) / (W_pos W_neg)
computed by sorting once and grouping equal scores: each group g adds
    wpos_g * (W_neg below g + 0.5 wneg_g).
With unit weights this is the Mann-Whitney U statistic with tie-averaged ranks.
Per-entity AUC sorts by (entity, score) and runs the same sums within each entity, so all
entities are done at once, O(n log n), no loop over entities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from evaluation._checks import as_1d, check_choice, check_finite, few

__all__ = ["EntityAUC", "auc", "per_entity_auc", "log_loss", "calibration_table"]


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
