"""Ratings as events: the watch proxy and the click label.

A rating says the learner was shown the item and reacted, so every rating becomes
one impression with an outcome. MovieLens has no watch time, so `watch_seconds` is a
proxy chosen explicitly:

- "rating":   watch_seconds = rating * seconds_per_star (a 4-star movie "watched" 40 min
              at the default 600 s per star);
- "constant": watch_seconds = seconds for every rating (implicit-feedback setups in
              which every rating counts as a watch);

and with `min_rating` set, ratings below it get watch_seconds = 0 (not watched).
clicked = 1 if rating > click_threshold else 0 (GDMix's label "rating > 3").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from watchlog.report import DataReport

__all__ = [
    "WATCH_PROXIES",
    "DEFAULT_SECONDS_PER_STAR",
    "DEFAULT_CONSTANT_SECONDS",
    "DEFAULT_CLICK_THRESHOLD",
    "RatingProxy",
    "ratings_to_events",
]

WATCH_PROXIES = ("rating", "constant")
DEFAULT_SECONDS_PER_STAR = 600.0
DEFAULT_CONSTANT_SECONDS = 600.0
DEFAULT_CLICK_THRESHOLD = 3.0
RATING_CHANNEL = "rating"


@dataclass(frozen=True)
class RatingProxy:
    """How a rating becomes `watch_seconds` and `clicked` (plain fields, Hydra-friendly)."""

    watch: str = "rating"
    seconds_per_star: float = DEFAULT_SECONDS_PER_STAR
    seconds: float = DEFAULT_CONSTANT_SECONDS
    min_rating: float | None = None
    click_threshold: float = DEFAULT_CLICK_THRESHOLD

    def __post_init__(self) -> None:
        if self.watch not in WATCH_PROXIES:
            raise ValueError(f"watch must be one of {WATCH_PROXIES}, got {self.watch!r}")
        for name in ("seconds_per_star", "seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.min_rating is not None and not math.isfinite(self.min_rating):
            raise ValueError(f"min_rating must be finite or None, got {self.min_rating!r}")
        if not math.isfinite(self.click_threshold):
            raise ValueError(f"click_threshold must be finite, got {self.click_threshold!r}")

    def watch_seconds(self, rating: np.ndarray) -> np.ndarray:
        """float32 watch seconds per rating (NaN where the rating is missing, "rating" proxy)."""
        rating = np.asarray(rating, dtype=np.float32)
        if self.watch == "rating":
            out = rating * np.float32(self.seconds_per_star)
        else:
            out = np.full(rating.shape, self.seconds, dtype=np.float32)
        if self.min_rating is not None:
            out[rating < self.min_rating] = 0.0
        return out

    def clicked(self, rating: np.ndarray) -> pd.arrays.IntegerArray:
        """Int8 1/0 per rating (rating > click_threshold); missing where the rating is."""
        rating = np.asarray(rating, dtype=np.float32)
        return pd.arrays.IntegerArray(
            (rating > self.click_threshold).astype(np.int8), mask=np.isnan(rating)
        )

    def describe(self) -> str:
        """One line for the data report."""
        if self.watch == "rating":
            watch = f"rating * {self.seconds_per_star:g} s per star"
        else:
            watch = f"{self.seconds:g} s for every rating"
        if self.min_rating is not None:
            watch += f", 0 below rating {self.min_rating:g}"
        return (
            f"watch proxy {self.watch!r}: watch_seconds = {watch}; "
            f"clicked = rating > {self.click_threshold:g}"
        )


def ratings_to_events(
    learner_id: np.ndarray | pd.Series,
    course_id: np.ndarray | pd.Series,
    rating: np.ndarray | pd.Series,
    ts: np.ndarray | pd.Series,
    proxy: RatingProxy,
    report: DataReport | None = None,
) -> pd.DataFrame:
    """One impression event per rating, in the data contract (before validation).

    `ts` is passed through (e.g. unix seconds, validated with ts_unit="s"). The
    `rating` column is kept as float32; position is missing (no slates in ratings
    data); channel is "rating". `source_row` is each rating's position in the input (the
    file's line order): the event log is sorted by time, and published random splits (the
    recommenders library's stratified split) draw in the file's row order.
    """
    rating = np.asarray(rating, dtype=np.float32)
    n = len(rating)
    events = pd.DataFrame(
        {
            "learner_id": learner_id,
            "course_id": course_id,
            "ts": ts,
            "watch_seconds": proxy.watch_seconds(rating),
            "clicked": proxy.clicked(rating),
            "impression": np.ones(n, dtype=bool),
            "position": pd.arrays.IntegerArray(
                np.zeros(n, dtype=np.int16), mask=np.ones(n, dtype=bool)
            ),
            "channel": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [RATING_CHANNEL]),
            "rating": rating,
            "source_row": np.arange(n, dtype=np.int32 if n < 2**31 else np.int64),
        }
    )
    if report is not None:
        report.note(proxy.describe())
        report.note(
            f"events: impression = True for all {n:,} ratings (a rated item was shown), "
            f"channel = {RATING_CHANNEL!r}, position missing (ratings have no slate position)"
        )
    return events
