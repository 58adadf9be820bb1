"""Watch-time sample weights: a click that led to watching counts more, the longer the watch.

LinkedIn Learning's response model weighs a clicked impression followed by watching by a
function of the watch time, and every other impression by 1; the weighted model moves its
decision boundary toward the long-watched clicks (the article's Figure 6, our
tests/test_glmix_weighting.py). With ws = watch seconds of a watched click:

    kind            weight                                   parameters
    log1p           1 + log1p(ws / scale)                    scale (seconds, default 60)
    capped_linear   min(1 + ws / scale, cap)                 scale, cap (default 10)
    fraction        1 + (cap - 1) * min(ws / duration, 1)    cap; needs the course duration

Every weight is >= 1, so a watched click never counts less than a non-click. A row is a
"watched click" when clicked == 1 and watch_seconds >= min_watch_seconds (the comparison the
cleaning's watch threshold makes, so a click on a watched event is a watched click). Clicked rows with
missing watch time, and (for "fraction") watched clicks whose duration is missing or 0, get
weight 1; every such case is counted in `counts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["WATCH_WEIGHTINGS", "WatchTimeWeights", "watch_time_weights"]

WATCH_WEIGHTINGS = ("log1p", "capped_linear", "fraction")


@dataclass
class WatchTimeWeights:
    """weights: (n,) float32 >= 1; counts: rows per case (watched clicks, clicks without
    watching, clicks with missing watch time, missing durations, capped)."""

    weights: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


def _as_float(name: str, x: Any, n: int | None) -> np.ndarray:
    arr = np.asarray(
        x.to_numpy(dtype="float64", na_value=np.nan) if hasattr(x, "to_numpy") else x,
        dtype=np.float64,
    )
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        raise ValueError(f"{name}: expected a 1-D array of length {n}; got shape {arr.shape}")
    return arr


def watch_time_weights(
    clicked: Any,
    watch_seconds: Any,
    duration_seconds: Any = None,
    *,
    kind: str = "log1p",
    scale: float = 60.0,
    cap: float = 10.0,
    min_watch_seconds: float = 0.0,
) -> WatchTimeWeights:
    """Per-row sample weights from clicks and watch time (see the module docstring).

    clicked: (n,) 0/1 (bool, int, pandas Int8); watch_seconds: (n,) >= 0, NaN = missing;
    duration_seconds: (n,) the course's duration per row (needed by kind="fraction").
    """
    if kind not in WATCH_WEIGHTINGS:
        raise ValueError(f"kind: must be one of {list(WATCH_WEIGHTINGS)}; got {kind!r}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: must be > 0 (seconds); got {scale!r}")
    if not (np.isfinite(cap) and cap >= 1):
        raise ValueError(f"cap: must be >= 1 (a weight); got {cap!r}")
    c = _as_float("clicked", clicked, None)
    n = len(c)
    ws = _as_float("watch_seconds", watch_seconds, n)
    bad_c = ~np.isin(c, (0.0, 1.0))
    if bad_c.any():
        raise ValueError(
            f"clicked: must be 0/1 on every row; {int(bad_c.sum()):,} of {n:,} are not "
            f"(missing or other values), e.g. {c[bad_c][:5].tolist()}"
        )
    bad_ws = (ws < 0) | np.isinf(ws)  # NaN is missing (allowed); inf would weigh inf
    if bad_ws.any():
        raise ValueError(
            f"watch_seconds: must be finite and >= 0 (or missing); {int(bad_ws.sum()):,} of "
            f"{n:,} are not, e.g. rows {np.flatnonzero(bad_ws)[:5].tolist()}: "
            f"{ws[bad_ws][:5].tolist()}"
        )
    click = c == 1
    missing_ws = click & np.isnan(ws)
    # >= as in watchlog.cleaning.mark_watched; missing watch time never passes
    watched = click & ~np.isnan(ws) & (np.nan_to_num(ws, nan=0.0) >= min_watch_seconds)
    w = np.ones(n)
    counts = {
        "rows": n,
        "clicks": int(click.sum()),
        "watched_clicks": int(watched.sum()),
        "clicks_without_watching": int((click & ~watched & ~missing_ws).sum()),
        "clicks_missing_watch_seconds": int(missing_ws.sum()),
    }
    x = ws[watched]
    if kind == "log1p":
        w[watched] = 1.0 + np.log1p(x / scale)
    elif kind == "capped_linear":
        raw = 1.0 + x / scale
        counts["capped"] = int((raw > cap).sum())
        w[watched] = np.minimum(raw, cap)
    else:
        if duration_seconds is None:
            raise ValueError("kind='fraction' needs duration_seconds (the course's, per row)")
        d = _as_float("duration_seconds", duration_seconds, n)[watched]
        ok = np.isfinite(d) & (d > 0)
        counts["watched_clicks_without_duration"] = int((~ok).sum())
        frac = np.minimum(np.where(ok, x, 0.0) / np.where(ok, d, 1.0), 1.0)
        counts["capped"] = int((ok & (x > d)).sum())
        w[watched] = 1.0 + (cap - 1.0) * frac
    return WatchTimeWeights(w.astype(np.float32), counts)
