"""Ranking metrics over a batch of top-K lists and truth sets, vectorized over users.

Inputs
    topk   (n, K) int item indices, best first; -1 pads short lists (only at the end).
    truth  CSR (n_truth_rows x n_items); stored values are gains (1 for binary, or graded,
           e.g. watch seconds). A stored entry with gain > 0 is a relevant item.
    users  optional (n,) int: row i of `topk` is truth row `users[i]` (default: row i).

Definitions, for one user with relevant set R (|R| > 0), list l_1..l_K, hit_j = [l_j in R]:
    HR@k        = [sum_{j<=k} hit_j > 0]
    Precision@k = sum_{j<=k} hit_j / k          (k, not the list length: padding counts as miss)
    Recall@k    = sum_{j<=k} hit_j / |R|
    DCG@k       = sum_{j<=k} g(rel(l_j)) / log2(j + 1),  g = rel ("linear", as sklearn's
                  ndcg_score), 2^rel - 1 ("exp2"), or 1 for any relevant item ("binary")
    NDCG@k      = DCG@k / IDCG@k, IDCG@k = DCG of R's gains sorted high to low, cut at k
    AP@k        = sum_{j<=k} hit_j * Precision@j / D, with D = min(|R|, k) ("min_relevant_k",
                  Microsoft recommenders' `map_at_k`) or D = |R| ("relevant", recommenders'
                  legacy `map`); MAP@k is its mean over users
    MRR@k       = 1 / (position of the first hit) if it is <= k, else 0
Users with an empty truth row have none of these defined: they are left out and counted.

Hit lookup: the truth entries as sorted keys (row * n_items + col) and `np.searchsorted` for
the (n, K) list keys -- O((nnz + nK) log nnz) time, O(nnz + nK) memory, no dense matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from evaluation._checks import as_1d, as_csr, as_int_2d, check_choice, check_ks, few

__all__ = [
    "MAP_DENOMINATORS",
    "NDCG_GAINS",
    "RankingMetrics",
    "ranking_metrics",
    "catalogue_coverage",
    "intra_list_diversity",
    "novelty",
    "check_topk",
]

MAP_DENOMINATORS = ("min_relevant_k", "relevant")
NDCG_GAINS = ("linear", "exp2", "binary")
MapDenominator = Literal["min_relevant_k", "relevant"]
NdcgGain = Literal["linear", "exp2", "binary"]


@dataclass
class RankingMetrics:
    """Per-user metric arrays over the evaluated users, and list-level figures.

    per_user         metric name (e.g. "ndcg@10") -> (n_users,) float64, aligned with `users`
    users            (n_users,) int64: the truth row of each evaluated user
    n_skipped_empty  users left out because their truth row is empty
    extra            figures that are not per-user means (e.g. "coverage@10", "median_rank")
    settings         the conventions used (MAP denominator, NDCG gain, protocol, ...)
    """

    per_user: dict[str, np.ndarray]
    users: np.ndarray
    n_skipped_empty: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.users.shape[0])

    def summary(self) -> dict[str, float]:
        """Mean of every per-user metric (NaN entries, e.g. diversity of a 1-item list, are
        skipped), then `extra`, then the user counts."""
        out: dict[str, float] = {}
        for name, values in self.per_user.items():
            finite = values[~np.isnan(values)]
            out[name] = float(finite.mean()) if finite.size else float("nan")
        out.update({k: float(v) for k, v in self.extra.items()})
        out["n_users"] = float(self.n_users)
        out["n_skipped_empty"] = float(self.n_skipped_empty)
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per evaluated user: `user` then one column per metric."""
        return pd.DataFrame({"user": self.users, **self.per_user})


def check_topk(topk: Any, n_items: int, name: str = "topk") -> np.ndarray:
    """(n, K) int64 item lists: entries in [0, n_items) or -1, padding only at the end of a
    row, no item twice in a row."""
    arr = as_int_2d(name, topk)
    bad = (arr < -1) | (arr >= n_items)
    if bad.any():
        raise ValueError(
            f"{name}: item indices must be in [0, {n_items:,}) or -1 for padding; "
            f"{int(bad.sum()):,} are not (e.g. {few(arr[bad])})"
        )
    if arr.shape[1] > 1:
        pad = arr < 0
        # A pad followed by an item: padding in the middle of a list.
        mid = (pad[:, :-1] & ~pad[:, 1:]).any(axis=1)
        if mid.any():
            raise ValueError(
                f"{name}: padding (-1) must come after every item of a row; "
                f"{int(mid.sum()):,} row(s) break this (e.g. rows {few(np.flatnonzero(mid))})"
            )
        srt = np.sort(arr, axis=1)  # (n, K): equal neighbours are repeated items
        dup = ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any(axis=1)
        if dup.any():
            raise ValueError(
                f"{name}: an item may appear once per list; {int(dup.sum()):,} row(s) repeat "
                f"one (e.g. rows {few(np.flatnonzero(dup))})"
            )
    return arr


def _check_users(users: Any, n_rows: int, n_truth_rows: int) -> np.ndarray:
    if users is None:
        if n_truth_rows != n_rows:
            raise ValueError(
                f"truth: has {n_truth_rows:,} rows but topk has {n_rows:,}; pass `users` to say "
                "which truth row each list belongs to"
            )
        return np.arange(n_rows, dtype=np.int64)
    arr = as_1d("users", users, length=n_rows)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"users: must be integer row indices; got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= n_truth_rows)
    if bad.any():
        raise ValueError(
            f"users: must be truth row indices in [0, {n_truth_rows:,}); "
            f"{int(bad.sum()):,} are not (e.g. {few(arr[bad])})"
        )
    return arr


def _gain(rel: np.ndarray, ndcg_gain: str, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """Gains; exp2 as (2^rel - 1) / 2^shift, shift a user's scale (`_exp2_shift`): NDCG is
    a ratio of one user's sums, so the scale cancels, and 2^rel never overflows."""
    if ndcg_gain == "linear":
        return rel
    if ndcg_gain == "exp2":
        return np.exp2(rel - shift) - np.exp2(-shift)
    return (rel > 0).astype(np.float64)  # binary


_EXP2_SAFE = 512.0  # relevance up to which 2^rel is summed unscaled (far from float64's 1024)


def _exp2_shift(t: Any) -> np.ndarray:
    """(n,) per user: its largest relevance where that exceeds _EXP2_SAFE (e.g. watched
    seconds), else 0 (the plain 2^rel - 1, bit for bit)."""
    top = np.zeros(t.shape[0])
    rows = np.flatnonzero(np.diff(t.indptr) > 0)
    if rows.size:
        top[rows] = np.maximum.reduceat(t.data, t.indptr[rows])
    return np.where(top > _EXP2_SAFE, top, 0.0)


def ranking_metrics(
    topk: Any,
    truth: Any,
    ks: int | Sequence[int] = (10,),
    *,
    users: Any = None,
    map_denominator: MapDenominator = "min_relevant_k",
    ndcg_gain: NdcgGain = "linear",
    item_category: Any = None,
    item_popularity: Any = None,
) -> RankingMetrics:
    """HR, Precision, Recall, NDCG, MAP and MRR at each k in `ks` (see the module docstring).

    With `item_category` ((n_items,) int codes >= 0) adds per-user "diversity@k"; with
    `item_popularity` ((n_items,) counts >= 0) adds per-user "novelty@k"; "coverage@k" (distinct
    recommended items / n_items over the evaluated users' lists) goes to `extra`. The helpers
    `catalogue_coverage`, `intra_list_diversity` and `novelty` take any lists directly.
    """
    check_choice("map_denominator", map_denominator, MAP_DENOMINATORS)
    check_choice("ndcg_gain", ndcg_gain, NDCG_GAINS)
    if not hasattr(truth, "shape") or len(truth.shape) != 2:
        raise TypeError("truth: must be a 2-D scipy sparse matrix (n_users x n_items)")
    n_items = int(truth.shape[1])
    lists = check_topk(topk, n_items)  # (n, K) int64
    n, width = lists.shape
    ks = check_ks(ks, width)
    rows = _check_users(users, n, int(truth.shape[0]))
    t = as_csr("truth", truth, rows=rows)  # (n, n_items), canonical, gains > 0
    n_rel = np.diff(t.indptr)  # (n,) relevant items per user
    keep = np.flatnonzero(n_rel > 0)
    n_skipped = n - keep.size
    if n_skipped:
        lists, t, n_rel = lists[keep], t[keep], n_rel[keep]
    settings = {"map_denominator": map_denominator, "ndcg_gain": ndcg_gain, "ks": list(ks)}

    hit, gain = _lookup(lists, t)  # (n_eval, K) bool, (n_eval, K) float64 gain of each hit
    pos = np.arange(1, width + 1, dtype=np.float64)  # (K,) 1-based positions
    discount = 1.0 / np.log2(pos + 1.0)  # (K,)
    cum_hits = np.cumsum(hit, axis=1)  # (n_eval, K) hits within the first j positions
    # Precision@j at each hit, summed up to k: the AP numerator for every k at once.
    ap_num = np.cumsum(np.where(hit, cum_hits / pos, 0.0), axis=1)  # (n_eval, K)
    shift = _exp2_shift(t) if ndcg_gain == "exp2" else np.zeros(len(lists))  # (n_eval,)
    dcg = np.cumsum(_gain(gain, ndcg_gain, shift[:, None]) * discount, axis=1)  # (n_eval, K)
    any_hit = cum_hits[:, -1] > 0
    first = np.where(any_hit, np.argmax(hit, axis=1), width)  # (n_eval,) 0-based, K = none
    idcg = _ideal_dcg(t, ks, ndcg_gain, discount, shift)  # k -> (n_eval,)
    n_rel_f = n_rel.astype(np.float64)

    cats = None if item_category is None else _categories(item_category, n_items)
    info = None if item_popularity is None else _self_information(item_popularity, n_items)
    per_user: dict[str, np.ndarray] = {}
    extra: dict[str, float] = {}
    for k in ks:
        nh = cum_hits[:, k - 1].astype(np.float64)  # (n_eval,) hits in the top k
        denom = np.minimum(n_rel_f, k) if map_denominator == "min_relevant_k" else n_rel_f
        per_user[f"hr@{k}"] = (nh > 0).astype(np.float64)
        per_user[f"precision@{k}"] = nh / k
        per_user[f"recall@{k}"] = nh / n_rel_f
        per_user[f"ndcg@{k}"] = _safe_div(dcg[:, k - 1], idcg[k])
        per_user[f"map@{k}"] = ap_num[:, k - 1] / denom
        per_user[f"mrr@{k}"] = np.where(first < k, 1.0 / (first + 1.0), 0.0)
        top = lists[:, :k]  # (n_eval, k), already checked
        if cats is not None:
            per_user[f"diversity@{k}"] = _diversity(top, cats)
        if info is not None:
            per_user[f"novelty@{k}"] = _novelty(top, info)
        extra[f"coverage@{k}"] = _coverage(top, n_items)
    return RankingMetrics(per_user, rows[keep], n_skipped, extra, settings)


def _lookup(lists: np.ndarray, t: Any) -> tuple[np.ndarray, np.ndarray]:
    """For each list entry: is it in the user's truth row, and its gain (0 if not)."""
    n, n_items = t.shape
    if t.nnz == 0 or n == 0:
        return np.zeros(lists.shape, dtype=bool), np.zeros(lists.shape)
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(t.indptr))  # (nnz,)
    keys = row_of * n_items + t.indices  # (nnz,) sorted: rows ascending, columns sorted
    query = np.arange(n, dtype=np.int64)[:, None] * n_items + lists  # (n, K)
    at = np.minimum(np.searchsorted(keys, query), keys.size - 1)  # (n, K)
    hit = (keys[at] == query) & (lists >= 0)  # padding (-1) would alias the previous row
    return hit, np.where(hit, t.data[at], 0.0)


def _ideal_dcg(
    t: Any, ks: tuple[int, ...], ndcg_gain: str, discount: np.ndarray, shift: np.ndarray
) -> dict[int, np.ndarray]:
    """IDCG@k per user: the user's gains sorted high to low, first k discounted and summed."""
    n = t.shape[0]
    kmax = ks[-1]
    n_rel = np.diff(t.indptr)  # (n,)
    if ndcg_gain == "binary":
        cum = np.concatenate([[0.0], np.cumsum(discount)])  # (K+1,) ideal DCG of j hits
        return {k: cum[np.minimum(n_rel, k)] for k in ks}
    row_of = np.repeat(np.arange(n, dtype=np.int64), n_rel)  # (nnz,)
    order = np.lexsort((-t.data, row_of))  # by row, then gain high to low
    rank = np.arange(t.nnz) - t.indptr[row_of]  # (nnz,) 0-based rank within its row
    top = rank < kmax
    r = row_of[top]
    g = _gain(t.data[order][top], ndcg_gain, shift[r]) * discount[rank[top]]
    return {k: np.bincount(r, weights=np.where(rank[top] < k, g, 0.0), minlength=n) for k in ks}


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (all gains zero cannot happen after validation)."""
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def catalogue_coverage(topk: Any, n_items: int) -> float:
    """Distinct items recommended in any list (padding ignored) / n_items."""
    return _coverage(check_topk(topk, n_items), n_items)


def intra_list_diversity(topk: Any, item_category: Any) -> np.ndarray:
    """Per list: share of item pairs whose categories differ, 1 - sum_c C(n_c, 2) / C(L, 2),
    with n_c the items of category c among the L items of the list. NaN where L < 2.

    item_category: (n_items,) int codes >= 0 (e.g. from `pd.factorize`, missing mapped to a
    code of its own). Returns (n,) float64.
    """
    cats = _categories(item_category)
    return _diversity(check_topk(topk, cats.shape[0]), cats)


def novelty(topk: Any, item_popularity: Any) -> np.ndarray:
    """Per list: mean self-information -log2(p_i) of its items, p_i = pop_i / sum(pop).

    item_popularity: (n_items,) counts >= 0 (e.g. training interactions per item). An item
    with zero popularity has infinite novelty: recommending one is an error (smooth the counts,
    e.g. +1, if such items can be recommended). Returns (n,) float64, NaN for empty lists.
    """
    info = _self_information(item_popularity)
    return _novelty(check_topk(topk, info.shape[0]), info)


# The helpers below take lists already checked by `check_topk`.


def _coverage(lists: np.ndarray, n_items: int) -> float:
    if n_items == 0:
        return float("nan")
    seen = np.bincount(lists[lists >= 0], minlength=n_items)  # (n_items,) times recommended
    return float(np.count_nonzero(seen) / n_items)


def _categories(item_category: Any, n_items: int | None = None) -> np.ndarray:
    cats = as_1d("item_category", item_category, length=n_items)
    if not np.issubdtype(cats.dtype, np.integer):
        raise ValueError(f"item_category: must be integer codes; got dtype {cats.dtype}")
    if (cats < 0).any():
        raise ValueError(
            f"item_category: codes must be >= 0; {int((cats < 0).sum()):,} are negative "
            "(give missing categories a code of their own)"
        )
    return cats.astype(np.int64, copy=False)


def _diversity(lists: np.ndarray, cats: np.ndarray) -> np.ndarray:
    n, width = lists.shape
    sentinel = np.iinfo(np.int64).max  # padding sorts last, in a run of its own
    c = np.where(lists >= 0, cats[np.maximum(lists, 0)], sentinel)  # (n, K)
    c.sort(axis=1)  # equal categories are now adjacent runs
    j = np.arange(width)
    starts = np.ones_like(c, dtype=bool)
    starts[:, 1:] = c[:, 1:] != c[:, :-1]
    run_start = np.maximum.accumulate(np.where(starts, j, 0), axis=1)  # (n, K)
    valid = c != sentinel
    # Entry j pairs with the (j - run_start) equal-category entries before it.
    same = np.where(valid, j - run_start, 0).sum(axis=1).astype(np.float64)  # (n,)
    size = valid.sum(axis=1).astype(np.float64)
    pairs = size * (size - 1.0) / 2.0
    out = np.full(n, np.nan)
    np.divide(pairs - same, pairs, out=out, where=pairs > 0)
    return out


def _self_information(item_popularity: Any, n_items: int | None = None) -> np.ndarray:
    """(n_items,) -log2(pop / sum(pop)), inf where pop == 0."""
    pop = as_1d("item_popularity", item_popularity, dtype=np.float64, length=n_items)
    if not np.isfinite(pop).all() or (pop < 0).any() or pop.sum() <= 0:
        raise ValueError("item_popularity: must be finite, >= 0, with a positive sum")
    with np.errstate(divide="ignore"):
        return -np.log2(pop / pop.sum())


def _novelty(lists: np.ndarray, info: np.ndarray) -> np.ndarray:
    valid = lists >= 0
    vals = np.where(valid, info[np.maximum(lists, 0)], 0.0)  # (n, K)
    zero = valid & np.isinf(vals)
    if zero.any():
        items = np.unique(lists[zero])
        raise ValueError(
            f"item_popularity: {items.size:,} recommended item(s) have popularity 0 "
            f"(e.g. items {few(items)}); novelty would be infinite -- smooth the counts"
        )
    size = valid.sum(axis=1)
    out = np.full(lists.shape[0], np.nan)
    np.divide(vals.sum(axis=1), size, out=out, where=size > 0)
    return out
