"""Bootstrap intervals, paired system comparison, and per-segment breakdowns.

Percentile bootstrap of a mean: draw `n_boot` resamples of the n values with replacement,
take each resample's mean, report the (1 - ci) / 2 and (1 + ci) / 2 quantiles of those
means. Replicates are drawn in chunks of about `max_elements / n`, so memory stays
O(max_elements) whatever n and n_boot are. Seeded: same inputs and seed, same interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evaluation._checks import as_1d, check_same_length

__all__ = [
    "BootstrapCI",
    "PairedComparison",
    "bootstrap_ci",
    "paired_bootstrap",
    "percentile_interval",
    "segment_breakdown",
]

DEFAULT_MAX_ELEMENTS = 1 << 22  # resample indices held at once (32 MiB of int64)


@dataclass(frozen=True)
class BootstrapCI:
    """Mean of the values and its percentile-bootstrap interval [low, high] at level ci."""

    mean: float
    low: float
    high: float
    ci: float
    n: int
    n_boot: int


@dataclass(frozen=True)
class PairedComparison:
    """System A vs. B on the same users (difference = A - B).

    mean_diff, low, high: mean difference and its paired-bootstrap interval
    win_rate: share of bootstrap replicates in which A's mean > B's mean
    user_win / user_tie / user_loss: share of users where A > B, |A - B| <= tie_tol, A < B
    """

    mean_a: float
    mean_b: float
    mean_diff: float
    low: float
    high: float
    ci: float
    win_rate: float
    user_win: float
    user_tie: float
    user_loss: float
    n: int
    n_boot: int


def _values(name: str, x: Any) -> np.ndarray:
    v = as_1d(name, x, dtype=np.float64)
    bad = ~np.isfinite(v)
    if bad.any():
        raise ValueError(
            f"{name}: must be finite; {int(bad.sum()):,} NaN/inf value(s) "
            "(drop them first, e.g. values[~np.isnan(values)])"
        )
    return v


def _check_args(n: int, n_boot: int, ci: float) -> None:
    if n == 0:
        raise ValueError("values: need at least one value to bootstrap")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot: must be a positive int; got {n_boot!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci: must be in (0, 1); got {ci!r}")


def boot_means(
    x: np.ndarray, n_boot: int, rng: np.random.Generator, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> np.ndarray:
    """(n_boot,) means of resamples of `x` with replacement, chunked over replicates."""
    n = x.shape[0]
    step = max(1, int(max_elements) // max(n, 1))
    out = np.empty(n_boot)
    for start in range(0, n_boot, step):
        c = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(c, n))  # (c, n) resample indices
        out[start : start + c] = x[idx].mean(axis=1)
    return out


def _interval(means: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = np.quantile(means, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0])
    return float(lo), float(hi)


def percentile_interval(replicates: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """The (1 - ci) / 2 and (1 + ci) / 2 quantiles of bootstrap replicates (of any statistic)."""
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci: must be in (0, 1); got {ci!r}")
    return _interval(np.asarray(replicates, dtype=np.float64), ci)


def bootstrap_ci(
    values: Any,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int | np.random.Generator = 0,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> BootstrapCI:
    """Percentile-bootstrap interval of the mean of `values` (n,) (see module docstring)."""
    v = _values("values", values)
    _check_args(v.shape[0], n_boot, ci)
    means = boot_means(v, n_boot, np.random.default_rng(seed), max_elements)
    lo, hi = _interval(means, ci)
    return BootstrapCI(float(v.mean()), lo, hi, ci, v.shape[0], int(n_boot))


def paired_bootstrap(
    a: Any,
    b: Any,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int | np.random.Generator = 0,
    tie_tol: float = 0.0,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> PairedComparison:
    """Compare per-user metrics of systems A and B on the same users (a[i], b[i] = user i).

    Users are resampled jointly: each replicate's mean(A) - mean(B) = mean of the resampled
    differences d = a - b; the interval is the percentile interval of those, the win rate the
    share of replicates with mean(A) > mean(B).
    """
    va, vb = _values("a", a), _values("b", b)
    check_same_length(a=va, b=vb)
    _check_args(va.shape[0], n_boot, ci)
    d = va - vb  # (n,) per-user difference
    means = boot_means(d, n_boot, np.random.default_rng(seed), max_elements)
    lo, hi = _interval(means, ci)
    tie = np.abs(d) <= tie_tol
    return PairedComparison(
        mean_a=float(va.mean()),
        mean_b=float(vb.mean()),
        mean_diff=float(d.mean()),
        low=lo,
        high=hi,
        ci=ci,
        win_rate=float((means > 0).mean()),
        user_win=float((~tie & (d > 0)).mean()),
        user_tie=float(tie.mean()),
        user_loss=float((~tie & (d < 0)).mean()),
        n=int(d.shape[0]),
        n_boot=int(n_boot),
    )


def segment_breakdown(
    values: Any,
    segments: Any,
    n_boot: int = 0,
    ci: float = 0.95,
    seed: int | np.random.Generator = 0,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> pd.DataFrame:
    """Mean of per-user metric(s) per segment, optionally with a bootstrap interval.

    values: (n,) array, or a mapping name -> (n,) array (e.g. `RankingMetrics.per_user`);
    segments: (n,) labels aligned with the values (missing labels form a segment of their own).
    Returns columns [metric,] segment, users, mean[, low, high]: metrics in the mapping's
    order, segments sorted within each.
    NaN values (a metric undefined for a user, e.g. diversity of a one-item list) are left
    out of that metric, as `RankingMetrics.summary` leaves them out: `users` counts the users
    with a value. With n_boot > 0 each segment is bootstrapped on its own users with its own
    stream of the seed, so equal values give equal intervals whichever metric they are.
    """
    named = dict(values) if isinstance(values, Mapping) else {None: values}
    seg = as_1d("segments", segments)
    codes, labels = pd.factorize(seg, sort=True, use_na_sentinel=False)
    n_seg = len(labels)
    base = int(np.random.default_rng(seed).integers(2**63))  # one draw from a Generator seed
    frames = []
    for name, vals in named.items():
        what = "values" if name is None else f"values[{name!r}]"
        v = as_1d(what, vals, dtype=np.float64)
        check_same_length(values=v, segments=seg)
        keep = ~np.isnan(v)
        v = _values(what, v[keep])  # inf still raises
        c = codes[keep]
        users = np.bincount(c, minlength=n_seg)
        sums = np.bincount(c, weights=v, minlength=n_seg)
        mean = np.divide(sums, users, out=np.full(n_seg, np.nan), where=users > 0)
        frame = pd.DataFrame({"segment": labels, "users": users, "mean": mean})
        if n_boot > 0:
            _check_args(v.shape[0], n_boot, ci)
            order = np.argsort(c, kind="stable")  # users grouped by segment
            bounds = np.r_[0, np.cumsum(users)]
            cis = [
                _interval(boot_means(v[order[bounds[i] : bounds[i + 1]]], n_boot,
                                     np.random.default_rng([base, i]), max_elements), ci)
                if users[i] else (np.nan, np.nan)
                for i in range(n_seg)
            ]  # fmt: skip
            frame["low"] = [lo for lo, _ in cis]
            frame["high"] = [hi for _, hi in cis]
        if name is not None:
            frame.insert(0, "metric", name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
