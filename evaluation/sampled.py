"""Sampled protocol of the NCF paper (He et al. 2017, "Neural Collaborative Filtering").

For each (user, held-out positive) pair, draw N negatives (default 99) uniformly without
replacement from the items the user never interacted with, rank the positive among the
N + 1 candidates and score the rank:
    rank     = 1 + #(negatives with score >= positive score)   (ties count against it)
    HR@k     = [rank <= k]
    NDCG@k   = 1 / log2(rank + 1) if rank <= k else 0          (one relevant item, IDCG = 1)
    MRR      = 1 / rank                                         (over the whole N + 1 list)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from evaluation._checks import as_1d, as_csr, check_finite, check_ks, few, in_sorted
from evaluation.ranking import RankingMetrics

__all__ = ["sample_negatives", "sampled_metrics", "evaluate_sampled"]

PairScoreFn = Callable[[np.ndarray, np.ndarray], Any]
_EXACT_BELOW = 4  # rows with fewer than 4 N candidates are sampled exactly, not by rejection


def _int_1d(name: str, x: Any, length: int | None = None) -> np.ndarray:
    arr = as_1d(name, x, length=length)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: must be integer indices; got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def sample_negatives(
    users: Any,
    positives: Any,
    exclude: Any,
    n_negatives: int = 99,
    *,
    seed: int | np.random.Generator = 0,
    batch_size: int = 1 << 21,
    max_rounds: int = 8,
) -> np.ndarray:
    """(n_pairs, n_negatives) int64 negatives, row i for pair (users[i], positives[i]).

    Candidates of pair i: items not stored in `exclude[users[i]]` (all known items of that
    user) and not positives[i]. Each row is a uniform sample without replacement from them
    (no duplicates within a row; the same user in two pairs gets independent rows).
    Vectorized rejection sampling: every round draws, for all unfinished rows at once, about
    need / acceptance-rate uniform items, drops known items and repeats (first draw wins), and
    fills rows in draw order. Rows with few candidates (< 4 N), or unfinished after
    `max_rounds`, are sampled exactly instead: random keys over the catalogue, known items set
    to +inf, the N smallest kept. Memory ~ `batch_size` draws. Deterministic given `seed`.
    Raises, naming the users, when some pair has fewer than N candidates.
    """
    if not sp.issparse(exclude):
        raise TypeError(f"exclude: must be a scipy sparse matrix; got {type(exclude).__name__}")
    n_rows, n_items = (int(d) for d in exclude.shape)
    u = _int_1d("users", users)
    pos = _int_1d("positives", positives, length=u.shape[0])
    if not isinstance(n_negatives, int | np.integer) or n_negatives < 1:
        raise ValueError(f"n_negatives: must be a positive int; got {n_negatives!r}")
    for name, arr, hi in (("users", u, n_rows), ("positives", pos, n_items)):
        bad = (arr < 0) | (arr >= hi)
        if bad.any():
            raise ValueError(
                f"{name}: must be in [0, {hi:,}) (exclude has shape {exclude.shape}); "
                f"{int(bad.sum()):,} are not (e.g. {few(arr[bad])})"
            )
    n_neg, n_pairs = int(n_negatives), u.shape[0]
    rng = np.random.default_rng(seed)
    ex = as_csr("exclude", exclude, structural=True)  # sorted, deduplicated pattern
    ex_keys = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(ex.indptr)) * n_items
    ex_keys += ex.indices  # (nnz,) sorted keys user * n_items + item
    pos_known = in_sorted(ex_keys, u * n_items + pos)  # (n_pairs,)
    n_cand = n_items - np.diff(ex.indptr)[u] - (~pos_known)  # (n_pairs,) candidates per pair
    short = n_cand < n_neg
    if short.any():
        raise ValueError(
            f"exclude: {int(short.sum()):,} pair(s) have fewer than n_negatives={n_neg} "
            f"candidate negatives (e.g. users {few(u[short])} with {few(n_cand[short])} "
            f"candidates); lower n_negatives or drop those users"
        )

    out = np.full((n_pairs, n_neg), -1, dtype=np.int64)  # (n_pairs, N) int, -1 = not yet
    filled = np.zeros(n_pairs, dtype=np.int64)
    exact = n_cand < _EXACT_BELOW * n_neg
    attempts = np.where(exact, max_rounds, 0)  # exact rows skip rejection entirely
    while True:
        todo = np.flatnonzero((filled < n_neg) & (attempts < max_rounds))
        if todo.size == 0:
            break
        need = n_neg - filled[todo]
        # Expected draws to get `need` accepted ones, with slack for repeats.
        m = np.ceil(need * (n_items / n_cand[todo]) * 1.25).astype(np.int64) + 4
        take = max(1, int(np.searchsorted(np.cumsum(m), batch_size, side="right")))
        todo, m = todo[:take], m[:take]
        _rejection_round(todo, m, u, pos, ex_keys, n_items, out, filled, rng)
        attempts[todo] += 1
    rest = np.flatnonzero(filled < n_neg)
    if rest.size:
        _exact_rows(rest, u, pos, ex, n_neg, batch_size, out, rng)
    return out


def _rejection_round(
    rows: np.ndarray,
    m: np.ndarray,
    u: np.ndarray,
    pos: np.ndarray,
    ex_keys: np.ndarray,
    n_items: int,
    out: np.ndarray,
    filled: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """One batch of draws for pairs `rows` (m[i] draws for rows[i]); fills `out` in place."""
    r = np.repeat(rows, m)  # (draws,) pair of each draw, grouped by pair in `rows` order
    items = rng.integers(0, n_items, size=r.size, dtype=np.int64)  # (draws,)
    ok = ~in_sorted(ex_keys, u[r] * n_items + items) & (items != pos[r])
    r, items = r[ok], items[ok]
    # Already accepted negatives of these pairs come first, so a repeat of one is dropped.
    have = out[rows]  # (len(rows), N)
    acc_r = np.repeat(rows, filled[rows])
    acc_items = have[have >= 0]  # row-major: matches acc_r
    keys = np.concatenate([acc_r * n_items + acc_items, r * n_items + items])
    _, first = np.unique(keys, return_index=True)  # first occurrence of every key
    new = np.sort(first[first >= acc_r.size]) - acc_r.size  # new draws, in draw order
    r, items = r[new], items[new]
    if r.size == 0:
        return
    # Position of each kept draw within its pair's group of draws.
    group_start = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    counts = np.diff(np.r_[group_start, r.size])
    offset = np.arange(r.size) - np.repeat(group_start, counts)
    slot = filled[r] + offset
    fit = slot < out.shape[1]
    out[r[fit], slot[fit]] = items[fit]
    np.add.at(filled, r[fit], 1)


def _exact_rows(
    rows: np.ndarray,
    u: np.ndarray,
    pos: np.ndarray,
    ex: sp.csr_array,
    n_neg: int,
    batch_size: int,
    out: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Exact uniform samples for pairs `rows`: random keys, known items at +inf, N smallest."""
    n_items = ex.shape[1]
    step = max(1, batch_size // max(n_items, 1))
    for start in range(0, rows.size, step):
        part = rows[start : start + step]
        keys = rng.random((part.size, n_items))  # (c, n_items) float64
        sub = ex[u[part]]
        kr = np.repeat(np.arange(part.size), np.diff(sub.indptr))
        keys[kr, sub.indices] = np.inf
        keys[np.arange(part.size), pos[part]] = np.inf
        pick = np.argpartition(keys, n_neg - 1, axis=1)[:, :n_neg]  # (c, N) N smallest keys
        order = np.argsort(np.take_along_axis(keys, pick, axis=1), axis=1)
        out[part] = np.take_along_axis(pick, order, axis=1)  # in random (key) order


def sampled_metrics(
    pos_scores: Any,
    neg_scores: Any,
    ks: int | Sequence[int] = (10,),
    *,
    users: Any = None,
) -> RankingMetrics:
    """HR@k, NDCG@k, MRR and rank per pair from (n,) positive and (n, N) negative scores.

    Ties count against the positive (rank = 1 + #(neg >= pos)). Per-"user" arrays are per
    pair; `users` (n,) labels them (default 0..n-1). `extra` holds "median_rank".
    """
    p = as_1d("pos_scores", _np(pos_scores), dtype=np.float64)
    neg = np.asarray(_np(neg_scores), dtype=np.float64)
    if neg.ndim != 2 or neg.shape[0] != p.shape[0]:
        raise ValueError(
            f"neg_scores: expected shape (n_pairs, N) = ({p.shape[0]:,}, N); got {neg.shape}"
        )
    check_finite("pos_scores", p)
    check_finite("neg_scores", neg)
    ks = check_ks(ks, neg.shape[1] + 1)
    labels = np.arange(p.shape[0]) if users is None else _int_1d("users", users, p.shape[0])
    rank = 1 + (neg >= p[:, None]).sum(axis=1)  # (n,) int
    rank_f = rank.astype(np.float64)
    per_user: dict[str, np.ndarray] = {}
    for k in ks:
        inside = rank <= k
        per_user[f"hr@{k}"] = inside.astype(np.float64)
        per_user[f"ndcg@{k}"] = np.where(inside, 1.0 / np.log2(rank_f + 1.0), 0.0)
    per_user["mrr"] = 1.0 / rank_f
    per_user["rank"] = rank_f
    extra = {"median_rank": float(np.median(rank_f)) if rank.size else float("nan")}
    settings = {"protocol": "sampled", "n_negatives": int(neg.shape[1]), "ks": list(ks)}
    return RankingMetrics(per_user, labels, 0, extra, settings)


def _np(x: Any) -> Any:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


def evaluate_sampled(
    score_pairs: PairScoreFn,
    users: Any,
    positives: Any,
    exclude: Any,
    ks: int | Sequence[int] = (10,),
    *,
    n_negatives: int = 99,
    seed: int | np.random.Generator = 0,
    chunk_size: int = 8192,
) -> RankingMetrics:
    """Sample negatives, score [positive, negatives] per pair, and compute `sampled_metrics`.

    score_pairs(users_chunk (c,) int64, items_chunk (c, 1 + N) int64) -> (c, 1 + N) scores
    (tensor or array); column 0 holds the positive. Called on chunks of `chunk_size` pairs.
    """
    u = _int_1d("users", users)
    pos = _int_1d("positives", positives, length=u.shape[0])
    neg = sample_negatives(u, pos, exclude, n_negatives, seed=seed)  # (n, N)
    cand = np.concatenate([pos[:, None], neg], axis=1)  # (n, 1 + N)
    scores = np.empty(cand.shape, dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, u.shape[0], max(1, int(chunk_size))):
            sl = slice(start, start + chunk_size)
            got = np.asarray(_np(score_pairs(u[sl], cand[sl])), dtype=np.float64)
            if got.shape != cand[sl].shape:
                raise ValueError(
                    f"score_pairs: must return shape (len(users_chunk), 1 + n_negatives) = "
                    f"{cand[sl].shape}; got {got.shape}"
                )
            scores[sl] = got
    res = sampled_metrics(scores[:, 0], scores[:, 1:], ks, users=u)
    res.settings["seed"] = seed if isinstance(seed, int) else "generator"
    return res
