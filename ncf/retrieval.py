"""Top-K retrieval by dot product: learner embeddings against course embeddings, in chunks.

    idx, scores = top_k_by_dot(learner_emb, course_emb, 100, exclude=watched_csr)
    idx, scores = top_k_by_dot(learner_emb, course_emb, 100, method="hnsw")  # approximate
    idx, scores = similar_by_cosine(course_emb, [3, 17], 10)   # neighbours of courses 3 and 17

Exact paths, the same results (up to float rounding):
  faiss (CPU, the default when faiss is importable):
    * a catalogue of at most `MAX_ITEMS` (65,536) courses, with or without an exclusion:
      products in small blocks (2 MB or 128 learners), the excluded entries set to -inf,
      and a threshold select per row (`evaluation.threshold_select.dot_top_k`: a sampled
      threshold, a vectorised compare, a sort of the ~2N survivors; the rare row with too
      few above its threshold redone with its exact N-th score as the threshold);
    * a larger catalogue: per chunk of queries, faiss's flat inner-product search
      (`ncf.ann.ItemIndex`), and for an exclusion the over-fetch: rows are taken in order of
      their excluded count, each chunk asks for N + (its largest count) + 1 and the excluded
      ids are dropped before cutting to N (a row whose last fetched score ties its N-th is
      ranked by the torch path: the tie may reach past the fetch); a row excluding more
      than `heavy_limit(N)` items (max(N, 128)), where that over-fetch would cost more than
      masking, is ranked by the torch path instead.
    100k x 10k, d=64, top-100, 1 thread (benchmarks/bench_retrieval.py, code 429a51c): the
    first path takes 0.62-0.65x faiss's own search time (without an exclusion), with or
    without one; the over-fetch 1.2x; a faiss selector per learner (`IDSelectorNot`) is
    exact too but needs one search per learner: 3.7x.
  torch: one matmul per chunk, excluded / non-candidate items set to -inf, `torch.topk`
    (`evaluation.full_ranking_topk`: the chunk loop, the exclusion and the NaN check).
    Used on CUDA, without faiss, for per-row candidate lists (a CSR: masked on the full
    rows) and when the embeddings' norms are so large that a score could overflow (faiss
    would not report an inf/NaN score; torch raises on NaN as evaluation does).
Memory is bounded by the chunk: `chunk_size x m` float32 scores on the torch path,
`chunk_size x (N + excluded)` results plus faiss's 16 MB block on the faiss search path, a
2 MB (or 128-row) score block and a (d, m) permuted copy of the items on the masked path;
the (n, N) results on every path.

Approximate search (`method="hnsw" | "ivf"`, or a fitted `ItemIndex` reused across calls) is
for catalogues of 100k+ courses: exclusion by the same over-fetch, a global candidate set of
more than `EXACT_CANDIDATES` (65,536) courses by a faiss selector (a smaller one is scored
exactly: a filtered search over few allowed items returns short lists), per-row candidates
scored exactly. Lists may miss items (recall < 1).
Evaluation never uses it (`evaluation.full_ranking_topk` is exact; the blend's judged
candidates assert exact retrieval); see `ncf.ann`.

Result convention (both functions, every path): `idx` (n, N) int64 item indices and
`scores` (n, N) float32, best first. When a row has fewer than N allowed items (N > m,
candidates, exclusion) the list is padded at the end with index -1 and score -inf. Ties go
to the lower item index on every exact path, CPU and CUDA: a list is the first N of the
allowed items sorted by (descending score, ascending index), -0.0 equal to +0.0 (the
threshold select keys survivors so; torch.topk's and faiss's lists are re-ordered by
`evaluation.full_ranking.ties_to_lower_index`, and a row with a tie across the N-th place
is ranked again exactly). The paths' products may still differ in the last float bit,
which can swap near-equal scores; an approximate index orders its lists the same way but
may miss items. The same code runs on CPU and CUDA (`device="auto"`); results come back as
numpy arrays on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from evaluation import full_ranking_topk, resolve_device
from evaluation._checks import few, in_sorted
from evaluation.full_ranking import ties_to_lower_index
from evaluation.threshold_select import cannot_overflow, dot_top_k
from ncf.ann import ItemIndex, check_method, load_faiss
from watchlog.progress import progress

__all__ = ["check_finite", "similar_by_cosine", "top_k_by_dot"]

_log = logging.getLogger(__name__)

DEFAULT_CHUNK = 4096
MAX_ITEMS = 65_536  # the masked path up to here, faiss's search above (bench_retrieval, sizes)
EXACT_CANDIDATES = MAX_ITEMS  # global candidate sets up to here are searched exactly, any method
_BITSET_LIMIT = 1 << 29  # chunk x items bits (64 MB) for the exclusion test, else sorted keys


def _as_matrix(name: str, x: Any, d: int | None = None) -> torch.Tensor:
    """`x` (numpy or torch) as a 2-D float tensor, without copying when it already is one."""
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: must be a numpy array or torch tensor; got {type(x).__name__}")
    want = "(n, d)" if name == "queries" else "(m, d)"
    if d is not None:
        want = want.replace("d)", f"d={d})")
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape {want}; got {tuple(t.shape)}")
    if d is not None and t.shape[1] != d:
        raise ValueError(
            f"{name}: expected shape {want} (d = items.shape[1]); got {tuple(t.shape)}"
        )
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected floating-point embeddings; got dtype {t.dtype}")
    t = t.detach()  # retrieval never differentiates (and numpy cannot take a graph's tensor)
    return check_finite(name, t)


def check_finite(
    name: str, t: torch.Tensor, label: Callable[[np.ndarray], Any] | None = None
) -> torch.Tensor:
    """`t` (rows, d), refused when any entry is NaN/inf, naming how many rows and a few of
    them: their positions, or `label(positions)` (e.g. the caller's ids). One pass when all
    is finite (the sum), a (rows,) mask only to build the error."""
    if t.numel() and bool(torch.isfinite(t.sum())):  # NaN/inf anywhere makes the sum so
        return t  # a finite sum: every entry is finite (one pass, no (rows, d) mask)
    bad = ~torch.isfinite(t).all(dim=1)  # (rows,) any NaN/inf in the row (or a sum overflow)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().cpu().numpy()
        shown = f"rows {few(rows)}" if label is None else few(label(rows[:6]))
        raise ValueError(
            f"{name}: must be finite; {rows.size:,} row(s) hold NaN/inf (e.g. {shown})"
        )
    return t


def _check_csr(name: str, m: Any, shape: tuple[int, int]) -> sp.csr_array:
    if not sp.issparse(m):
        raise TypeError(f"{name}: must be a scipy sparse matrix (CSR); got {type(m).__name__}")
    if m.shape != shape:
        raise ValueError(f"{name}: expected shape (n_queries, n_items) = {shape}; got {m.shape}")
    return sp.csr_array(m)


def _check_item_index(name: str, idx: Any, m: int) -> np.ndarray:
    arr = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx)
    if arr.ndim != 1:
        raise ValueError(f"{name}: must be a 1-D array of item indices; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: must hold integer item indices; got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = arr[(arr < 0) | (arr >= m)]
    if bad.size:
        raise ValueError(
            f"{name}: item indices must be in [0, {m:,}); {bad.size:,} are not (e.g. {few(bad)})"
        )
    return arr


def _track(chunks, n_chunks: int):
    """The chunk loop with progress (silent unless it runs for a while: `watchlog.progress`)."""
    return progress(chunks, total=n_chunks, desc="top-k retrieval", unit="chunks", logger=_log)


def top_k_by_dot(
    queries: Any,
    items: Any,
    N: int,
    *,
    exclude: Any = None,
    candidates: Any = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device = "auto",
    method: str | ItemIndex = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """The N items with the largest `queries[i] @ items[j]` for every query row i.

    queries: (n, d) and items: (m, d), numpy or torch, finite; computed in float32.
    exclude: optional CSR (n, m); the stored entries of row i (e.g. courses already watched)
        are never returned for query i. Values are ignored (an explicit zero still excludes).
    candidates: optional restriction of the items that may be returned, either
        * a 1-D array of item indices (the same allowed set for every query; duplicates are
          harmless): scores are computed against those items only, so a small set is cheap;
        * a CSR (n, m) whose stored entries in row i are query i's allowed items (values
          ignored); the full row is scored and everything else masked (always exact).
        `exclude` applies on top of `candidates`.
    chunk_size: queries per block; memory ~ chunk_size x m float32 scores on the torch path,
        chunk_size x (N + excluded per row) on the faiss path.
    method: 'exact' (default), 'hnsw' or 'ivf' (an index is built over `items` for this call),
        or a fitted `ncf.ann.ItemIndex` over these items (reused across calls; see ncf.ann;
        items of another shape or other values than it was fitted on raise a ValueError).
    Returns (idx (n, N) int64, scores (n, N) float32), best first, ties to the lower item
    index; rows with fewer than N allowed items are padded with -1 / -inf (see module doc).
    """
    if isinstance(N, bool) or not isinstance(N, int | np.integer) or N < 1:
        raise ValueError(f"N: must be a positive int; got {N!r}")
    N = int(N)
    index = method if isinstance(method, ItemIndex) else ItemIndex(check_method(method))
    dev = resolve_device(device)
    it = _as_matrix("items", items)
    m, d = int(it.shape[0]), int(it.shape[1])
    q = _as_matrix("queries", queries, d)
    n = int(q.shape[0])
    ex = None if exclude is None else _check_csr("exclude", exclude, (n, m))
    if index.fitted:  # the items it was fitted on: shape, then SHA-256 of the values
        index.check_items(items if isinstance(items, torch.Tensor) else it, "method")

    allowed: np.ndarray | None = None  # global candidate set, (m_sub,) sorted item indices
    per_row: sp.csr_array | None = None
    if candidates is not None:
        if sp.issparse(candidates):
            per_row = _check_csr("candidates", candidates, (n, m))
        else:
            allowed = np.unique(_check_item_index("candidates", candidates, m))
    if (allowed is not None and allowed.size == 0) or m == 0:
        return _padding(n, N)  # nothing allowed at all: every list is padding
    if index.approximate and allowed is not None and allowed.size <= EXACT_CANDIDATES:
        # A small global candidate set is scored exactly: cheap at this size, and a filtered
        # graph (or IVF) search over few allowed items comes back short (most lists padded).
        index = ItemIndex("exact")

    faiss = load_faiss()
    if index.approximate and faiss is None:
        raise ImportError(
            f"method={index.method!r} needs faiss: pip install faiss-cpu (or method='exact')"
        )
    use_faiss = (
        faiss is not None
        and per_row is None  # per-row candidate sets are masked on the full rows, exactly
        and (dev.type == "cpu" or index.approximate)  # exact on CUDA: torch on the device
        and cannot_overflow(q, it)  # so no score can be inf/NaN, which faiss would not report
    )
    # A fitted (approximate) index over all items takes a global candidate set as a faiss
    # selector; every other path scores the candidate columns only.
    selector = allowed if use_faiss and index.fitted else None
    subset = allowed is not None and selector is None
    if subset:
        ex = None if ex is None else ex[:, allowed]  # (n, m_sub): the restricted columns
        it = it[torch.from_numpy(allowed).to(it.device)]  # (m_sub, d)
    if not use_faiss:
        if index.approximate:
            _log.debug("per-row candidates: scored exactly, not with the %s index", index.method)
        idx, scores = _torch_top_k(q, it, N, np.arange(n), ex, per_row, chunk_size, dev)
    elif not index.fitted and _masked_path(it, index):
        idx, scores = dot_top_k(q, it, N, ex, track=_track)
    else:
        index = index if index.fitted else index.clone().fit(it)
        idx, scores = _faiss_top_k(q, it, N, ex, index, selector, chunk_size, dev)
    if subset:
        hit = idx >= 0
        idx[hit] = allowed[idx[hit]]  # back to global item indices
    return idx, scores.astype(np.float32, copy=False)


def _masked_path(it: torch.Tensor, index: ItemIndex) -> bool:
    """Exact search on a catalogue of at most MAX_ITEMS courses, with or without an exclusion:
    blocked products and a threshold select (`evaluation.threshold_select.dot_top_k`) beat
    faiss's own search (0.65x its time at 100k x 10k) and its over-fetch for the exclusion."""
    return not index.approximate and it.shape[0] <= MAX_ITEMS


def _padding(n: int, N: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, N), -1, dtype=np.int64), np.full((n, N), -np.inf, dtype=np.float32)


def _torch_top_k(
    q: torch.Tensor,
    it: torch.Tensor,
    N: int,
    users: np.ndarray,
    ex: sp.csr_array | None,
    per_row: sp.csr_array | None,
    chunk_size: int,
    dev: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows `users` of q: one matmul per chunk, masked, `torch.topk` (full_ranking_topk)."""
    item_t = it.to(dev, torch.float32).T.contiguous()  # (d, m) on the device, once

    def score(rows_np: np.ndarray) -> torch.Tensor:
        rows = torch.from_numpy(rows_np).to(q.device)
        s = q.index_select(0, rows).to(dev, torch.float32) @ item_t  # (c, m) fresh buffer
        if per_row is not None:
            sub = per_row[rows_np]  # (c, m) pattern of allowed items
            blocked = torch.ones(s.shape, dtype=torch.bool, device=dev)  # (c, m)
            r = np.repeat(np.arange(rows_np.shape[0], dtype=np.int64), np.diff(sub.indptr))
            blocked[
                torch.from_numpy(r).to(dev), torch.from_numpy(sub.indices.astype(np.int64)).to(dev)
            ] = False
            s.masked_fill_(blocked, float("-inf"))
        return s

    return full_ranking_topk(
        score,
        N,
        users=users,
        exclude=ex,
        chunk_size=chunk_size,
        device=dev,
        return_scores=True,
        copy=False,  # `score` returns a fresh buffer every call: exclusion may write into it
        track=_track,
    )


def _faiss_top_k(
    q: torch.Tensor,
    it: torch.Tensor,
    N: int,
    ex: sp.csr_array | None,
    index: ItemIndex,
    selector: np.ndarray | None,
    chunk_size: int,
    dev: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """faiss search per chunk; exclusion by over-fetching N + (the chunk's largest excluded
    count) + 1 and dropping the excluded ids. Rows are taken in order of excluded count, so a
    chunk's over-fetch is its own rows' need; rows excluding more than `heavy_limit(N)`
    items (where the over-fetch would cost more than masking) go to the torch path.

    Ties to the lower index, as on the other paths: faiss returns equal scores in its own
    order, and how many of a row's ties it fetches depends on the chunk's over-fetch. So
    one more item than needed is fetched, every fetched list is put in (score, index)
    order (`ties_to_lower_index`) before the cut to N, and on an exact index a row whose
    last fetched score equals its N-th (an item tied with the N-th may not have been
    fetched) is ranked by the torch path, like a heavy row."""
    n, m = int(q.shape[0]), int(index.n_items_)
    idx_out, sc_out = _padding(n, N)
    counts = np.zeros(n, np.int64) if ex is None else np.diff(ex.indptr).astype(np.int64)
    heavy = counts > heavy_limit(N)
    order = np.flatnonzero(~heavy)
    order = order[np.argsort(counts[order], kind="stable")]  # light rows, fewest excluded first
    redo = [np.flatnonzero(heavy)]  # rows ranked exactly by torch
    n_chunks = -(-order.size // chunk_size)
    for lo in _track(range(0, order.size, chunk_size), n_chunks):
        rows = order[lo : lo + chunk_size]  # (c,) ascending excluded count
        k = min(m, N + int(counts[rows[-1]]) + 1)  # + 1: shows a tie crossing the N-th
        xq = q.index_select(0, torch.from_numpy(rows).to(q.device))
        xq = np.ascontiguousarray(xq.detach().to("cpu", torch.float32).numpy())
        scores, idx = index.search(xq, k, allowed=selector)  # (c, k) each
        last = scores[:, -1].copy()  # (c,) the lowest fetched score; -inf: the row ran out
        if ex is not None and counts[rows[-1]] > 0:
            idx, scores = _drop_excluded(idx, scores, ex[rows], k)  # kept first, all of them
        idx, scores = ties_to_lower_index(idx, scores)
        kk = min(N, idx.shape[1])
        idx_out[rows, :kk], sc_out[rows, :kk] = idx[:, :kk], scores[:, :kk]
        if not index.approximate and k < m:  # an approximate list is not exact anyway
            nth = scores[:, kk - 1]  # (c,) -inf: fewer than N kept, so every allowed fetched
            redo.append(rows[(nth > -np.inf) & (last >= nth)])
    rows = np.sort(np.concatenate(redo))
    if rows.size:  # exact for these few rows, whatever the index (an approximate one too)
        h_it, h_ex = it, ex
        if selector is not None:  # global candidates of a prefitted index: its columns only
            h_it = it[torch.from_numpy(selector).to(it.device)]
            h_ex = None if ex is None else ex[:, selector]
        h_idx, sc_out[rows] = _torch_top_k(q, h_it, N, rows, h_ex, None, chunk_size, dev)
        if selector is not None:
            h_idx[h_idx >= 0] = selector[h_idx[h_idx >= 0]]
        idx_out[rows] = h_idx
        _log.debug("%d rows (%d excluding more than %d items, the others with a tie at the "
                   "N-th score): ranked by torch", rows.size, int(heavy.sum()),
                   heavy_limit(N))  # fmt: skip
    return idx_out, sc_out


def heavy_limit(N: int) -> int:
    """Excluded count above which a row is ranked by masking instead of over-fetching: at
    top-100 over 10k items faiss at k = 2N costs about what matmul + mask + torch.topk does."""
    return max(N, 128)


def _drop_excluded(
    idx: np.ndarray, scores: np.ndarray, ex_rows: sp.csr_array, N: int
) -> tuple[np.ndarray, np.ndarray]:
    """(c, k) results without the items stored in `ex_rows` (c, m), shifted left, cut to N."""
    c, k = idx.shape
    m = int(ex_rows.shape[1])
    ex_rows = sp.csr_array(ex_rows)
    keep = idx >= 0
    if ex_rows.nnz:  # is (row, item) excluded? keyed row * m + item
        r = np.repeat(np.arange(c, dtype=np.int64), np.diff(ex_rows.indptr))
        banned = r * m + ex_rows.indices
        want = np.arange(c, dtype=np.int64)[:, None] * m + np.maximum(idx, 0)  # (c, k)
        if c * m <= _BITSET_LIMIT:  # a (c x m)-bit set: 5 MB a 4,096 x 10k chunk, 4x faster
            bits = np.zeros((c * m + 7) // 8, dtype=np.uint8)
            np.bitwise_or.at(bits, banned >> 3, (1 << (banned & 7)).astype(np.uint8))
            keep &= ((bits[want >> 3] >> (want & 7).astype(np.uint8)) & 1) == 0
        else:  # huge catalogues: binary search in the sorted keys
            keep &= ~in_sorted(np.sort(banned), want)
    out_i, out_s = idx[:, :N].copy(), scores[:, :N].copy()
    rows = np.flatnonzero(~keep[:, :N].all(axis=1))  # only these lost one of their first N
    if rows.size:
        order = np.argsort(~keep[rows], axis=1, kind="stable")[:, :N]  # kept first, in order
        kept = np.take_along_axis(keep[rows], order, axis=1)
        out_i[rows] = np.where(kept, np.take_along_axis(idx[rows], order, axis=1), -1)
        out_s[rows] = np.where(kept, np.take_along_axis(scores[rows], order, axis=1), -np.inf)
    return out_i, out_s


def similar_by_cosine(
    items: Any,
    item_idx: Any,
    N: int,
    *,
    candidates: Any = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """The N items most cosine-similar to each of `item_idx`, the item itself excluded.

    items: (m, d) embeddings; item_idx: (q,) int indices into items (repeats allowed).
    candidates: as in `top_k_by_dot` (a 1-D global set, or a CSR (q, m)).
    A zero-norm embedding has cosine 0 with everything (it is normalized to the zero vector).
    Returns (idx (q, N) int64, cosine (q, N) float32), best first, padded with -1 / -inf
    when fewer than N other items are allowed.
    """
    it = _as_matrix("items", items)
    m = int(it.shape[0])
    query = _check_item_index("item_idx", item_idx, m)
    unit = torch.nn.functional.normalize(it.to(torch.float32), dim=1)  # (m, d), rows of norm 1 or 0
    own = sp.csr_array(
        (np.ones(query.size, dtype=np.float32), query, np.arange(query.size + 1)),
        shape=(query.size, m),
    )  # (q, m): each query's own item, excluded
    return top_k_by_dot(
        unit[torch.from_numpy(query).to(unit.device)],
        unit,
        N,
        exclude=own,
        candidates=candidates,
        chunk_size=chunk_size,
        device=device,
    )
