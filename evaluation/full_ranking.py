"""Full-ranking protocol: score every item for every user, chunk by chunk, on CPU or GPU.

A score source is either
  * a callable `score_fn(users_chunk: np.ndarray[int64]) -> (chunk, n_items)` torch tensor
    or numpy array (e.g. `lambda u: user_emb[u] @ item_emb.T`),
  * a dense (n_rows, n_items) numpy array / torch tensor, indexed by user, or
  * `Factors(queries, items)`: scores that are a product (`queries[u] @ items.T`, queries
    an array or a callable), which the CPU ranks block by block without holding a chunk of
    scores (`evaluation.threshold_select.dot_top_k`).
Users, `exclude` rows and `truth`/`targets` rows share one index space (dense learner index).

Memory is bounded by `chunk_size x n_items` scores (plus one copy of a chunk when exclusion
must not write into the caller's array); the same code runs on "cpu" and "cuda".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from evaluation import threshold_select
from evaluation._checks import as_1d, as_csr, check_ks, few
from evaluation.ranking import MapDenominator, NdcgGain, RankingMetrics, ranking_metrics

__all__ = [
    "Factors",
    "ScoreSource",
    "TargetRanks",
    "resolve_device",
    "full_ranking_topk",
    "target_ranks",
    "ties_to_lower_index",
    "evaluate_full_ranking",
]

DEFAULT_CHUNK = 2048


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> CUDA when available, else CPU; anything else is passed to `torch.device`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but CUDA is not available")
    return dev


@dataclass
class TargetRanks:
    """Rank of each (user, target item) pair among that user's candidates (1 = best).

    users, items, ranks: (n_pairs,) int64, pairs ordered by user chunk then item.
    """

    users: np.ndarray
    items: np.ndarray
    ranks: np.ndarray

    def summary(self) -> dict[str, float]:
        """n_pairs, mean_rank, median_rank and mrr = mean(1 / rank) over pairs."""
        if self.ranks.size == 0:
            nan = float("nan")
            return {"n_pairs": 0.0, "mean_rank": nan, "median_rank": nan, "mrr": nan}
        r = self.ranks.astype(np.float64)
        return {
            "n_pairs": float(r.size),
            "mean_rank": float(r.mean()),
            "median_rank": float(np.median(r)),
            "mrr": float((1.0 / r).mean()),
        }


@dataclass(frozen=True)
class Factors:
    """A score source given as a product: the scores of users `u` are `queries[u] @ items.T`.

    queries: (n_rows, d) array or tensor indexed by user, or a callable users -> (c, d)
    (e.g. a learner tower); items: (n_items, d). On the CPU in float32 `full_ranking_topk`
    multiplies them in cache-sized blocks and selects as it goes
    (`threshold_select.dot_top_k`: no chunk of scores is ever held); on CUDA, in float64,
    with NaN/inf factors or norms that could overflow, and in `target_ranks`, a chunk's
    scores are the product and the usual path follows.
    """

    queries: Any
    items: Any


ScoreSource = Callable[[np.ndarray], Any] | np.ndarray | torch.Tensor | Factors


def _ranking_dtype(dtype: torch.dtype) -> torch.dtype:
    """Scores are ranked in float32 or float64: integers in float64 (float32 merges
    neighbours above 2**24), half precisions in float32 (numpy has no bfloat16)."""
    if not dtype.is_floating_point:
        return torch.float64
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _Scores:
    """Uniform access to a score source: `chunk(users)` -> ((c, n_items) float tensor, owned).

    `owned` is True when the tensor is a buffer this module made (so exclusion may write into
    it); False when it may share memory with the caller's data.
    """

    def __init__(self, source: ScoreSource, device: torch.device, copy: bool):
        self.device, self.copy = device, copy
        self.fn: Callable[[np.ndarray], Any] | None = None
        self.dense: torch.Tensor | None = None
        self.items: torch.Tensor | None = None  # (n_items, d) when the source is Factors
        if isinstance(source, Factors):
            self._factors(source)
            return
        if callable(source) and not isinstance(source, np.ndarray | torch.Tensor):
            self.fn = source
        else:
            dense = torch.as_tensor(source) if isinstance(source, np.ndarray) else source
            if not isinstance(dense, torch.Tensor) or dense.ndim != 2:
                shape = getattr(source, "shape", None)
                raise ValueError(
                    "scores: must be a callable or a 2-D (n_users, n_items) array; "
                    f"got {type(source).__name__} with shape {shape}"
                )
            self.dense = dense
        self.n_items: int | None = None if self.dense is None else int(self.dense.shape[1])
        self.n_rows: int | None = None if self.dense is None else int(self.dense.shape[0])

    def _factors(self, source: Factors) -> None:
        items = torch.as_tensor(source.items)
        if items.ndim != 2 or not items.is_floating_point():
            raise ValueError(
                "scores: Factors.items must be a 2-D float (n_items, d) array; got "
                f"{items.dtype} with shape {tuple(items.shape)}"
            )
        self.items = items.to(self.device)
        self.n_items, self.n_rows = int(items.shape[0]), None
        if callable(source.queries) and not isinstance(source.queries, np.ndarray | torch.Tensor):
            self.fn = source.queries
        else:
            self.dense = torch.as_tensor(source.queries)
            self.n_rows = int(self.dense.shape[0])
        self._items_finite: bool | None = None  # no NaN/inf in the items, once it is needed

    def queries(self, users: np.ndarray) -> torch.Tensor:
        """(c, d) float query rows of `users` on the device (Factors sources only)."""
        if self.dense is not None:
            q = self.dense.index_select(0, torch.from_numpy(users).to(self.dense.device))
        else:
            q = self.fn(users)
            q = torch.as_tensor(q) if isinstance(q, np.ndarray) else q
        d = int(self.items.shape[1])
        if not isinstance(q, torch.Tensor) or tuple(q.shape) != (users.shape[0], d):
            got = tuple(q.shape) if hasattr(q, "shape") else type(q).__name__
            raise ValueError(
                f"Factors.queries: must give shape (len(users_chunk), d) = "
                f"{(users.shape[0], d)}; got {got}"
            )
        return q.to(self.device)

    def blocked(self, q: torch.Tensor, k: int) -> bool:
        """Whether the chunk with query rows `q` takes `threshold_select.dot_top_k`: both
        factors fit the select (`_select_fits`), and the scores are finite (no NaN/inf
        factor: a finite sum) and cannot overflow, since NaN would never pass its compare
        and is reported by the other path."""
        it = self.items
        if not (_select_fits(q, k, it.shape[0]) and _select_fits(it, k, it.shape[0])):
            return False
        if self._items_finite is None:
            self._items_finite = bool(torch.isfinite(it.sum()))
        finite = self._items_finite and bool(torch.isfinite(q.sum()))
        return finite and threshold_select.cannot_overflow(q, it)

    def chunk(
        self, users: np.ndarray, queries: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, bool]:
        """((c, n_items) scores of `users`, whether the buffer is ours to modify), in a dtype
        that ranks exactly (`_ranking_dtype`)."""
        if self.items is not None:  # Factors: the product, a new buffer
            q = self.queries(users) if queries is None else queries
            dtype = _ranking_dtype(torch.promote_types(q.dtype, self.items.dtype))
            return q.to(dtype) @ self.items.to(dtype).T, True  # (c, n_items)
        if self.dense is not None:
            idx = torch.from_numpy(users).to(self.dense.device)
            out = self.dense.index_select(0, idx)  # a new (c, n_items) buffer: ours
            ptr, raw = -1, out
        else:
            raw = self.fn(users)
            raw = torch.as_tensor(raw) if isinstance(raw, np.ndarray) else raw
            if not isinstance(raw, torch.Tensor):
                raise TypeError(
                    f"score_fn: must return a torch tensor or numpy array; got {type(raw).__name__}"
                )
            ptr = raw.data_ptr()
        out = raw.to(self.device)
        if out.dtype != _ranking_dtype(out.dtype):
            out = out.to(_ranking_dtype(out.dtype))
        expect = (users.shape[0], self.n_items if self.n_items is not None else out.shape[-1])
        if out.ndim != 2 or tuple(out.shape) != expect:
            raise ValueError(
                f"score_fn: must return shape (len(users_chunk), n_items) = {expect}; "
                f"got {tuple(out.shape)}"
            )
        self.n_items = expect[1]
        owned = (not self.copy) or out.data_ptr() != ptr
        return out, owned


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size: must be a positive int; got {chunk_size!r}")
    return int(chunk_size)


def _users(users: Any, default_rows: int | None, name_of_default: str) -> np.ndarray:
    if users is None:
        if default_rows is None:
            raise ValueError(f"users: required when {name_of_default}")
        return np.arange(default_rows, dtype=np.int64)
    arr = as_1d("users", users)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"users: must be integer indices; got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"users: must be >= 0; got {few(arr[arr < 0])}")
    return arr.astype(np.int64, copy=False)


def _check_rows(name: str, m: Any, users: np.ndarray, n_items: int | None) -> sp.csr_array:
    if not sp.issparse(m):
        raise TypeError(f"{name}: must be a scipy sparse matrix (CSR); got {type(m).__name__}")
    if n_items is not None and m.shape[1] != n_items:
        raise ValueError(f"{name}: expected {n_items:,} columns (n_items); got shape {m.shape}")
    if users.size and users.max() >= m.shape[0]:
        bad = users[users >= m.shape[0]]
        raise ValueError(
            f"{name}: has {m.shape[0]:,} rows but users index up to {int(users.max()):,} "
            f"({bad.size:,} user(s) out of range, e.g. {few(bad)})"
        )
    return sp.csr_array(m)


def _excluded_index(
    exclude: sp.csr_array | None, users: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(rows, cols) of the chunk's excluded (user, item) entries, or None when there are none."""
    if exclude is None:
        return None
    sub = exclude[users]  # (c, n_items) pattern of already-known items
    if sub.nnz == 0:
        return None
    rows = np.repeat(np.arange(users.shape[0], dtype=np.int64), np.diff(sub.indptr))
    r = torch.from_numpy(rows).to(device)
    c = torch.from_numpy(sub.indices.astype(np.int64, copy=False)).to(device)
    return r, c


def _mask_excluded(
    s: torch.Tensor, owned: bool, exclude: sp.csr_array | None, users: np.ndarray
) -> torch.Tensor:
    """Set the excluded (user, item) entries of the (c, n_items) chunk to -inf."""
    idx = _excluded_index(exclude, users, s.device)
    if idx is None:
        return s
    if not owned:
        s = s.clone()  # never write into the caller's scores
    s[idx] = float("-inf")
    return s


def _nan_error(users: np.ndarray, rows: torch.Tensor) -> ValueError:
    bad = users[rows.cpu().numpy()]
    return ValueError(
        f"scores: NaN for {bad.size:,} user(s) in this chunk (e.g. users {few(bad)}); "
        "scores must not be NaN"
    )


def _torch_top_k(s: torch.Tensor, k: int, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, items) (c, k) numpy of the chunk `s` (c, m) by `torch.topk`, -inf -> item -1,
    ties to the lower item index as on the threshold path. torch.topk breaks ties its own
    way (it differs between CPU and CUDA), so: a row whose k-th score also occurs past the
    list (more than k scores >= it: one compare pass over the chunk) is redone by a stable
    sort of the row (rare outside constant scores), then `ties_to_lower_index` orders the
    equal scores inside every list."""
    vals, idx = torch.topk(s, k, dim=1, sorted=True)  # (c, k) each
    nan_rows = torch.isnan(vals).any(dim=1)  # NaN sorts above everything
    if bool(nan_rows.any()):
        raise _nan_error(users, torch.nonzero(nan_rows).flatten())
    kth = vals[:, -1:]  # (c, 1); at -inf the list holds every finite score: nothing to pick
    cut = (kth[:, 0] > float("-inf")) & ((s >= kth).sum(dim=1) > k) if k else None  # (c,)
    if cut is not None and bool(cut.any()):
        rows = torch.nonzero(cut).flatten()
        sub = s.index_select(0, rows)  # (r, m)
        # + 0.0 turns -0.0 into +0.0: a radix sort (CUDA) would otherwise put it below +0.0
        order = torch.sort(sub + 0.0, dim=1, descending=True, stable=True).indices[:, :k]
        vals[rows], idx[rows] = sub.gather(1, order), order
    idx = idx.masked_fill(vals == float("-inf"), -1)
    # which rows need ordering, found where the lists are: on CUDA, a pass on the device
    # instead of the host's numpy pass over every list (usually no row needs it)
    unordered = out_of_order_rows(idx, vals).cpu().numpy()
    out_i, out_v = ties_to_lower_index(idx.cpu().numpy(), vals.cpu().numpy(), unordered)
    return out_v, out_i


def out_of_order_rows(idx, scores):
    """(c,) bool, numpy or torch as given: the rows of the lists `idx` (c, k) with their
    `scores` that hold an adjacent pair out of (descending score, ascending index) order;
    padding (-1 / -inf) at the end may come in any order. One O(c x k) pass."""
    a, b = scores[:, :-1], scores[:, 1:]  # (c, k - 1) each adjacent pair
    tie = (b == a) & (idx[:, 1:] < idx[:, :-1]) & (idx[:, 1:] >= 0)
    return ((b > a) | tie).any(1)  # axis / dim 1


def ties_to_lower_index(
    idx: np.ndarray, scores: np.ndarray, unordered: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k lists `idx` (c, k) int with their `scores` (c, k), best first as a top-k gives
    them (torch.topk, faiss) with equal scores in its own order, re-ordered in place by
    (descending score, ascending index); padding (-1 / -inf) stays at the end. Only rows
    with an adjacent pair out of that order are sorted (`unordered`, (c,) bool, when the
    caller found them already, else `out_of_order_rows`), by `np.lexsort` over (score,
    index). The set of a list is the caller's: for an exact boundary its k-th score must not
    occur past the list (see `_torch_top_k`)."""
    if idx.shape[1] < 2:
        return idx, scores
    if unordered is None:
        unordered = out_of_order_rows(idx, scores)
    rows = np.flatnonzero(unordered)  # rows out of (-score, index) order
    if rows.size:
        i, v = idx[rows], scores[rows]  # (r, k) copies
        order = np.lexsort((np.where(i < 0, np.iinfo(np.int64).max, i), -v), axis=1)
        idx[rows] = np.take_along_axis(i, order, axis=1)
        scores[rows] = np.take_along_axis(v, order, axis=1)
    return idx, scores


def _select_fits(t: torch.Tensor, k: int, m: int) -> bool:
    """The threshold select (`evaluation.threshold_select`) for CPU float32 data whose top k
    is a small part of a row of m; torch.topk elsewhere (CUDA, float64, k near m)."""
    return (
        t.device.type == "cpu" and t.dtype == torch.float32
        and 4 * k <= m <= threshold_select.MAX_COLUMNS
    )  # fmt: skip


def _threshold_path(s: torch.Tensor, k: int) -> bool:
    """A chunk of scores `s` (c, m) ranked by the threshold select (`_select_fits`)."""
    return _select_fits(s, k, s.shape[1])


_SELECT_ROWS = 128  # rows a threshold select takes at once: the flags stay in cache


def _threshold_top_k(chunk: np.ndarray, k: int, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(items (c, k) int64, scores (c, k) float32) of the chunk (c, m), best first, ties to
    the lower item index; -1 / -inf where a row has fewer than k finite scores. Any sample
    (`threshold_select.sample_of`) keeps the result exact: rows short of k above their
    threshold are redone with their exact k-th score as the threshold."""
    chunk = np.ascontiguousarray(chunk)
    c, m = chunk.shape
    size, rank = threshold_select.sample_size(m, k)
    idx, vals = np.empty((c, k), np.int64), np.empty((c, k), np.float32)
    hits = np.empty(_SELECT_ROWS * m + 8, np.bool_)  # (rows * m,) compare flags, reused
    nan_rows = []  # NaN never passes a compare: looked for apart, reported for the chunk
    for lo in range(0, c, _SELECT_ROWS):
        block = chunk[lo : lo + _SELECT_ROWS]  # (b, m)
        with np.errstate(invalid="ignore", over="ignore"):  # +inf and -inf sum to NaN
            nan = np.flatnonzero(np.isnan(block.sum(axis=1)))  # then looked at entry by entry
        if nan.size:
            nan_rows.append(lo + nan[np.isnan(block[nan]).any(axis=1)])
        top = threshold_select.top_n(block, k, size, rank, hits)
        idx[lo : lo + len(block)], vals[lo : lo + len(block)] = top
    if nan_rows and (bad := np.concatenate(nan_rows)).size:
        raise _nan_error(users, torch.from_numpy(bad))
    return idx, vals


def _chunk_top_k(
    src: _Scores, u: np.ndarray, k: int, ex: sp.csr_array | None
) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores) (c, min(k, n_items)) numpy of the users `u`, best first."""
    q = None
    if src.items is not None:  # Factors: products and the select, block by block
        q = src.queries(u)  # (c, d)
        kk = min(k, src.n_items)
        if src.blocked(q, kk):
            return threshold_select.dot_top_k(q, src.items, kk, None if ex is None else ex[u])
    s, owned = src.chunk(u, q)  # (c, n_items) float on the device
    s = _mask_excluded(s, owned, ex, u)
    kk = min(k, s.shape[1])
    if _threshold_path(s, kk):  # CPU float32: a compare a score, not a topk
        return _threshold_top_k(s.numpy(), kk, u)
    vals, idx = _torch_top_k(s, kk, u)
    return idx, vals


def full_ranking_topk(
    scores: ScoreSource,
    k: int,
    *,
    users: Any = None,
    exclude: Any = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device = "auto",
    return_scores: bool = False,
    copy: bool = True,
    track: Callable[[Iterable[slice], int], Iterable[slice]] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Top-k items per user over the whole catalogue, best first.

    users: (n,) int rows of the score source (default: every row of a dense source).
    exclude: CSR (>= max(users)+1 x n_items); its stored entries (e.g. already-watched items)
        get score -inf before top-k. Items at -inf are never returned: a user with fewer than
        k candidates gets a list padded with -1.
    copy: False lets exclusion write into the chunk `score_fn` returned (saves one chunk copy;
        only when that chunk is scratch: a fresh array, or a buffer refilled on every call).
    track: optional wrapper of the chunk loop, called as `track(chunks, n_chunks)`, e.g. a
        progress bar (`watchlog.progress.progress`); this package stays free of such imports.
    On the CPU, float32 scores are ranked by a threshold select (`evaluation.threshold_select`:
    one compare a score, a sort of the few above a sampled threshold); float64 or CUDA
    scores, and k above a quarter of the items, by `torch.topk`, whose ties are then put in
    order and whose rows with a tie across the k-th place are redone by a stable sort. On
    every path, CPU and CUDA, ties go to the lower item index: the list is the first k of
    the items sorted by (descending score, ascending index), -0.0 equal to +0.0. NaN
    scores raise. Returns (n, k) int64 item indices; with `return_scores`, also their (n, k)
    scores (numpy, the score dtype; -inf at padding).
    """
    check_ks(k)
    chunk_size = _check_chunk_size(chunk_size)
    dev = resolve_device(device)
    src = _Scores(scores, dev, copy)
    user_idx = _users(users, src.n_rows, "scores is a callable")
    n = user_idx.shape[0]
    ex = None if exclude is None else _check_rows("exclude", exclude, user_idx, src.n_items)
    if ex is not None and src.n_items is None:
        src.n_items = int(ex.shape[1])  # so every score chunk's width is checked against it
    if src.n_rows is not None and n and user_idx.max() >= src.n_rows:
        raise ValueError(
            f"users: index up to {int(user_idx.max()):,}; scores has {src.n_rows:,} rows"
        )

    top_items = np.full((n, k), -1, dtype=np.int64)  # (n, k) int, -1 = padding
    top_scores: np.ndarray | None = None
    parts: Iterable[slice] = _chunks(n, chunk_size)
    if track is not None:
        parts = track(parts, -(-n // chunk_size))
    with torch.inference_mode():
        for part in parts:
            idx, vals = _chunk_top_k(src, user_idx[part], k, ex)  # (c, kk) numpy each
            kk = idx.shape[1]
            top_items[part, :kk] = idx
            if return_scores:
                if top_scores is None:
                    top_scores = np.full((n, k), -np.inf, dtype=vals.dtype)
                top_scores[part, :kk] = vals
    if return_scores:
        if top_scores is None:
            top_scores = np.full((n, k), -np.inf, dtype=np.float32)
        return top_items, top_scores
    return top_items


def target_ranks(
    scores: ScoreSource,
    targets: Any,
    *,
    users: Any = None,
    exclude: Any = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device = "auto",
    copy: bool = True,
) -> TargetRanks:
    """Rank of every target (stored entry of `targets`, e.g. the engaged items) among the
    user's candidates: all items except the `exclude`d ones.

    rank = 1 + #(other candidates c with score_c >= score_target): ties count against the
    target, so a constant scorer ranks it last. Other targets of the same user are
    candidates too. A target that is itself excluded keeps its own score.
    users: (n,) rows of the score source, `targets` and `exclude` (default: every row of
    `targets`). Cost O(pairs x n_items); memory O(chunk_size x n_items).
    """
    chunk_size = _check_chunk_size(chunk_size)
    dev = resolve_device(device)
    src = _Scores(scores, dev, copy)
    if not sp.issparse(targets):
        raise TypeError(f"targets: must be a scipy sparse matrix; got {type(targets).__name__}")
    user_idx = _users(users, int(targets.shape[0]), "")
    if src.n_rows is not None and user_idx.size and user_idx.max() >= src.n_rows:
        bad = user_idx[user_idx >= src.n_rows]
        raise ValueError(
            f"scores: has {src.n_rows:,} rows but users index up to {int(user_idx.max()):,} "
            f"({bad.size:,} user(s) out of range, e.g. {few(bad)})"
        )
    tg = _check_rows("targets", targets, user_idx, src.n_items)
    ex = None if exclude is None else _check_rows("exclude", exclude, user_idx, tg.shape[1])
    src.n_items = int(tg.shape[1]) if src.n_items is None else src.n_items

    out_u, out_i, out_r = [], [], []
    with torch.inference_mode():
        for part in _chunks(user_idx.shape[0], chunk_size):
            u = user_idx[part]
            sub = as_csr("targets", tg, rows=u, structural=True)  # (c, n_items) pattern
            if sub.nnz == 0:
                continue
            s, owned = src.chunk(u)  # (c, n_items)
            if s.shape[0] != u.shape[0]:
                raise ValueError(
                    f"scores: {s.shape[0]:,} rows for a chunk of {u.shape[0]:,} users; the "
                    "score source needs a row for every user of `targets`"
                )
            prow = np.repeat(np.arange(u.shape[0], dtype=np.int64), np.diff(sub.indptr))
            pr = torch.from_numpy(prow).to(dev)  # (p,) local row of each pair
            pi = torch.from_numpy(sub.indices.astype(np.int64)).to(dev)  # (p,) target item
            target = s[pr, pi]  # (p,) gathered before exclusion (advanced indexing copies)
            if bool(torch.isnan(target).any()):
                bad = torch.nonzero(torch.isnan(target)).flatten()
                raise _nan_error(u, torch.unique(pr[bad]))
            idx = _excluded_index(ex, u, s.device)
            nan = torch.isnan(s)  # (c, n_items)
            if idx is not None:
                nan[idx] = False  # NaN where excluded is never compared
            nan_rows = nan.any(dim=1)  # (c,) NaN at a candidate
            if bool(nan_rows.any()):
                raise _nan_error(u, torch.nonzero(nan_rows).flatten())
            if idx is not None:  # excluded entries compare as NaN: never >= a target, even -inf
                s = s if owned else s.clone()  # never write into the caller's scores
                s[idx] = float("nan")
            ranks = torch.empty_like(pr)
            for blk in _chunks(pr.shape[0], chunk_size):  # (b, n_items) at a time
                t = target[blk, None]  # (b, 1)
                ge = (s[pr[blk]] >= t).sum(dim=1)  # (b,) candidates scoring >= target
                self_ge = s[pr[blk], pi[blk]] >= t[:, 0]  # the target itself, if a candidate
                ranks[blk] = 1 + ge - self_ge.long()
            out_u.append(u[prow])
            out_i.append(sub.indices.astype(np.int64))
            out_r.append(ranks.cpu().numpy())
    return TargetRanks(_concat(out_u), _concat(out_i), _concat(out_r))


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def evaluate_full_ranking(
    scores: ScoreSource,
    truth: Any,
    ks: int | Sequence[int] = (10,),
    *,
    users: Any = None,
    exclude: Any = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device = "auto",
    map_denominator: MapDenominator = "min_relevant_k",
    ndcg_gain: NdcgGain = "linear",
    item_category: Any = None,
    item_popularity: Any = None,
    copy: bool = True,
) -> RankingMetrics:
    """`full_ranking_topk` then `ranking_metrics`, scoring only users whose truth row is
    non-empty (the others are counted in `n_skipped_empty`). users default: every truth row.
    The truth is taken as given: an item both in `truth` and in `exclude` can never be
    listed but still counts in recall's |R| and the ideal DCG (drop such pairs from the
    truth first if they should not; the toolkit's own labels never hold a seen item)."""
    ks = check_ks(ks)
    if not sp.issparse(truth):
        raise TypeError(f"truth: must be a scipy sparse matrix; got {type(truth).__name__}")
    user_idx = _users(users, int(truth.shape[0]), "")
    t = as_csr("truth", _check_rows("truth", truth, user_idx, None), rows=user_idx)
    nonempty = np.diff(t.indptr) > 0  # (n,)
    topk = full_ranking_topk(
        scores,
        ks[-1],
        users=user_idx[nonempty],
        exclude=exclude,
        chunk_size=chunk_size,
        device=device,
        copy=copy,
    )
    res = ranking_metrics(
        topk,
        t[np.flatnonzero(nonempty)],
        ks,
        map_denominator=map_denominator,
        ndcg_gain=ndcg_gain,
        item_category=item_category,
        item_popularity=item_popularity,
    )
    res.users = user_idx[nonempty][res.users]
    res.n_skipped_empty += int((~nonempty).sum())
    res.settings["protocol"] = "full"
    return res
