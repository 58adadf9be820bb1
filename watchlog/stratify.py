"""Per-group ratio splits drawn exactly as Microsoft recommenders' `python_stratified_split`.

The library (recommenders 1.2.1, `recommenders.datasets.python_splitters._do_stratification`
with `is_random=True`) does, for a frame of n rows:

1. `np.random.seed(seed); data["random"] = np.random.rand(n)`: one uniform draw per row, in
   the frame's row order, from the legacy global generator (its stream is frozen across
   NumPy versions: `np.random.RandomState(seed).random_sample(n)` is the same stream);
2. sorts by (group, random) and ranks rows 1..count within each group;
3. for each cumulative ratio c_i (`np.cumsum` of the ratios, normalized by `math.fsum` when
   they do not sum to 1), part i holds the rows with
   round(c_{i-1} * count) < rank <= round(c_i * count), `round` being half-to-even
   (`Series.round`): a group of 6 at 0.75 keeps 4 rows, a group of 2 keeps both.

So the split depends on the seed, the group of each row, the order in which group values sort,
and the row order of the input. `recommenders_parts` repeats those steps with array operations
only (one lexsort; no Python loop over groups) and returns the same parts for the same input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["cumulative_ratios", "recommenders_parts"]


def cumulative_ratios(ratio: float | Sequence[float]) -> np.ndarray:
    """The library's thresholds: a float r means [r, 1 - r]; a list is normalized by its
    `math.fsum` when that is not exactly 1 (the library's `process_split_ratio`), then summed
    cumulatively with `np.cumsum` (same float operations, so the same rounding at .5)."""
    if isinstance(ratio, int | float):
        if not 0 < ratio <= 1:
            raise ValueError(f"stratify: a single ratio must be in (0, 1], got {ratio}")
        ratios = [float(ratio), 1 - float(ratio)]
    else:
        ratios = [float(r) for r in ratio]
        if not ratios or any(r <= 0 for r in ratios):
            raise ValueError(f"stratify: every ratio of a list must be > 0, got {list(ratio)}")
        total = math.fsum(ratios)
        if total != 1.0:
            ratios = [r / total for r in ratios]
    return np.cumsum(ratios)


def recommenders_parts(
    group: np.ndarray, seed: int, ratio: float | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """(part of each row, the library's output order) for rows given in its input order.

    `group`: integer codes whose order is the order in which the group values sort (the
    library sorts by the value itself). Part 0 is the first ratio (training for a single
    float). The output order is the row order of the frames the library returns (sorted by
    group, then by the random draw): a second call on the first part must see its rows in
    that order to reproduce calling the library twice.
    """
    group = np.asarray(group)
    n = len(group)
    thresholds = cumulative_ratios(ratio)
    key = np.random.RandomState(seed).random_sample(n)
    order = np.lexsort((key, group))
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if n else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes) + 1  # 1-based rank within its group
    count = np.repeat(sizes, sizes).astype(np.float64)
    # Part i: round(c_{i-1} n) < rank <= round(c_i n); the bounds are non-decreasing in i,
    # so the part is the number of bounds the rank exceeds.
    part_sorted = np.zeros(n, dtype=np.int64)
    for c in thresholds:  # 2 or 3 thresholds, each one vector operation
        part_sorted += rank > np.round(c * count)
    if (part_sorted == len(thresholds)).any():
        # Only if the normalized ratios sum to less than 1 and round(c_last * count) < count:
        # the library would silently leave such rows out of every part.
        raise ValueError(
            f"stratify: ratios {list(thresholds)} leave rows outside every part; "
            "give ratios that sum to 1"
        )
    part = np.empty(n, dtype=np.int64)
    part[order] = part_sorted
    return part, order
