"""Exact top-N by dot product, optionally with a per-query mask (courses already watched),
on the CPU: one matmul per small block of queries, the masked entries set to -inf, then a
threshold select per row.

    idx, scores = masked_top_k(queries, items, N, exclude_csr)   # exclude_csr may be None

Why not faiss's search: it cannot mask per query, so the exclusion has to over-fetch (ask
for N + the chunk's largest excluded count and drop the excluded ids afterwards), and at
top-100 of 10,000 courses about half of faiss's time is its top-k, not the product: its heap
is replaced about N ln(m / N) times per row, a sift of log2(N) levels each. Here every row
instead:

  threshold  the `SAMPLE_RANK`-th largest score among the row's first s columns of a randomly
             permuted catalogue (a random sample of its courses, the same for every row),
             with s chosen so that about `ABOVE` x N of the row's m scores exceed it
             (`np.partition` on the (block, s) sample);
  select     one vectorised compare of the block against the thresholds into a reused flag
             buffer, read back 8 flags to a 64-bit word (`flatnonzero` over the words, then
             over the flags of the few nonzero words: ~2N of m entries survive), then one
             sort of 64-bit keys (row | descending score | column) of the survivors: the
             lists come out best first;
  exact      a row with fewer than N scores above its threshold is redone from an empty
             faiss heap (`HeapArray.addn`). So the result never depends on the sample, only
             the time does.

The product is torch's (on its thread count), in blocks of 2 MB or 128 learners, whichever
is larger (5 MB at 10k courses), so the block is still in cache for the compare. (numpy's
OpenBLAS multiplied faster on the AMD box of the benchmarks, but bounding its threads means
setting them process-wide, and resetting numpy's BLAS threads made UMAP's seeded layouts
irreproducible later in the same process.) `ncf.retrieval.top_k_by_dot` uses this path for
exact CPU search on catalogues up to `MAX_ITEMS` courses, with or without an exclusion; above
that faiss's search (with the over-fetch) is used. Measured side by side in
`benchmarks/bench_retrieval.py` (results/retrieval.json). Memory: one (block, m) float32
score block, its (block, m) flags and survivors, the permuted (d, m) items and the (n, N)
results.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ncf.ann import faiss_threads, load_faiss

__all__ = ["MAX_ITEMS", "SAMPLE_RANK", "masked_top_k"]

MAX_ITEMS = 65_536  # above it faiss's search (bench_retrieval, part sizes)
SAMPLE_RANK = 16  # the threshold is the 16th largest sampled score: ~25% spread on ~2N above,
ABOVE = 2.0  # fewer than N above the threshold: ~0.5% of rows by that spread; redone, exact
_BLOCK_FLOATS = 512 << 10  # scores per block: 2 MB, so the block stays in cache between passes
_MIN_ROWS, _MAX_ROWS = 128, 4096  # rows per block: torch.mm (MKL) is slow on fewer rows
_COL_BITS = 20  # selection keys: row (12 bits: _MAX_ROWS) | score (32) | column (20)
_SIGN = np.uint32(0x80000000)
_SEED = 0  # the permutation that makes a prefix of the catalogue a random sample


def masked_top_k(
    queries: torch.Tensor,
    items: torch.Tensor,
    N: int,
    exclude: sp.csr_array | None,
    *,
    track: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(idx (n, N) int64, scores (n, N) float32) of the N largest `queries @ items.T` per row,
    best first, without the entries stored in `exclude` (n, m); rows with fewer than N
    allowed items are padded with -1 / -inf. queries (n, d) and items (m, d) float32 on the
    CPU, finite, with scores that cannot overflow (the caller checks). track: optional
    wrapper of the block loop (progress)."""
    faiss = load_faiss()
    n, m = int(queries.shape[0]), int(items.shape[0])
    if m > 1 << _COL_BITS:  # the selection keys hold a column in _COL_BITS bits
        raise ValueError(f"masked_top_k: at most {1 << _COL_BITS:,} items; got {m:,}")
    perm = np.random.default_rng(_SEED).permutation(m)  # (m,) permuted position -> item
    items_t = items.to("cpu", torch.float32)[torch.from_numpy(perm)].T.contiguous()  # (d, m)
    q = queries.to("cpu", torch.float32)  # (n, d)
    sample = min(m, math.ceil(SAMPLE_RANK * m / (ABOVE * N)))  # ~2N scores above its 16th
    rank = min(SAMPLE_RANK, sample)
    block = int(np.clip(_BLOCK_FLOATS // max(m, 1), _MIN_ROWS, _MAX_ROWS))
    if exclude is not None:
        where = np.empty(m, np.int64)
        where[perm] = np.arange(m)  # item -> permuted position
        ex_ptr, ex_col = exclude.indptr, where[exclude.indices]
    item_of = np.append(perm, -1)  # (m + 1,) permuted position -> item; -1 (padding) stays
    idx = np.empty((n, N), dtype=np.int64)
    scores = np.empty((n, N), dtype=np.float32)
    buf = torch.empty((block, m), dtype=torch.float32)  # (block, m) scores, reused
    hits = np.empty(block * m + 8, np.bool_)  # (block * m,) compare flags, reused
    starts = range(0, n, block)
    with faiss_threads(faiss):
        for lo in starts if track is None else track(starts, len(starts)):
            hi = min(n, lo + block)
            torch.mm(q[lo:hi], items_t, out=buf[: hi - lo])  # (c, m)
            flat = buf[: hi - lo].numpy()
            if exclude is not None and ex_ptr[hi] > ex_ptr[lo]:
                rows = np.repeat(np.arange(hi - lo, dtype=np.int64), np.diff(ex_ptr[lo : hi + 1]))
                flat.reshape(-1)[rows * m + ex_col[ex_ptr[lo] : ex_ptr[hi]]] = -np.inf
            seed = _kth_largest(flat[:, :sample], rank)  # (c,)
            out_i, out_s, short = _select_above(flat, seed, N, hits)
            if short.size:  # fewer than N above the seed: redo from an empty heap
                again_s = np.empty((short.size, N), np.float32)
                again_i = np.full((short.size, N), -1, dtype=np.int64)
                again_s[:] = -np.finfo(np.float32).max  # faiss's own empty value
                _heap_add(faiss, again_s, again_i, np.ascontiguousarray(flat[short]))
                again_s[again_i < 0] = -np.inf  # padding: fewer than N allowed items
                out_i[short], out_s[short] = again_i, again_s
            idx[lo:hi], scores[lo:hi] = item_of[out_i], out_s  # positions -> item indices
    return idx, scores


def _select_above(
    flat: np.ndarray, seed: np.ndarray, N: int, hits: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The N best of each row of `flat` (c, m) among its scores above `seed` (c,), best first:
    (idx (c, N) int64 columns, scores (c, N) float32, short (s,) the rows with fewer than N
    scores above their seed, whose lists here are meaningless and must be redone).
    hits: optional reused bool buffer of at least c * m + 8 entries (see `_positions_above`).

    One vectorised compare and a word-wise `flatnonzero` over the block (~2N of m entries
    survive), then one sort of 64-bit keys (row | descending score | column) over the
    survivors only: a survivor costs a few numpy passes, where a seeded heap pays a sift for
    each, and the lists come out sorted (no argsort of the results)."""
    c, m = flat.shape
    pos = _positions_above(flat, seed, hits)  # (K,) row-major positions above the seed
    if pos.size == 0:  # nothing above any seed: every row is short
        return np.full((c, N), -1, np.int64), np.empty((c, N), np.float32), np.arange(c)
    rows = pos // m
    bits = flat.reshape(-1)[pos].view(np.uint32)  # (K,) the scores' IEEE bits
    positive = bool(seed.min() >= 0)  # every survivor > 0: its bits order as its score
    desc = _SIGN - 1 - bits if positive else np.where(bits >= _SIGN, bits, ~bits & ~_SIGN)
    keys = (rows.astype(np.uint64) << (32 + _COL_BITS)) | (desc.astype(np.uint64) << _COL_BITS)
    keys |= (pos - rows * m).astype(np.uint64)  # column < 2**_COL_BITS, row < 2**12
    keys.sort()  # by row, then best score first (ascending desc), ties by column
    count = np.bincount(rows, minlength=c)  # (c,) survivors per row
    first = np.cumsum(count) - count  # (c,) each row's first key
    pick = np.minimum(first[:, None] + np.arange(N), keys.size - 1)  # (c, N); short rows: junk
    take = keys[pick]
    desc = (take >> _COL_BITS).astype(np.uint32)  # the row bits fall off in the cast
    bits = _SIGN - 1 - desc if positive else np.where(desc >= _SIGN, desc, ~desc & ~_SIGN)
    out_i = (take & np.uint64((1 << _COL_BITS) - 1)).astype(np.int64)
    return out_i, bits.view(np.float32), np.flatnonzero(count < N)


def _positions_above(flat: np.ndarray, seed: np.ndarray, hits: np.ndarray | None) -> np.ndarray:
    """(K,) int64 row-major positions of the entries of `flat` (c, m) above `seed` (c,), in
    order. The compare writes one flag a byte into `hits` (reused when given); the flags are
    then read as 64-bit words, 8 at a time: survivors are sparse (~2N of m), so
    `flatnonzero` over the c * m / 8 words, then over the flags of the few nonzero words only,
    is several times cheaper than over every flag (numpy's nonzero is a branch per entry)."""
    c, m = flat.shape
    size = c * m
    words = -(-size // 8)  # ceil: the last word may be partly past the block
    if hits is None or hits.size < words * 8:
        hits = np.empty(words * 8, np.bool_)
    np.greater(flat, seed[:, None], out=hits[:size].reshape(c, m))
    hits[size : words * 8] = False  # the last word's spare flags (left from a larger block)
    packed = hits[: words * 8].view(np.uint64)  # (words,) 8 flags each
    nonzero = np.flatnonzero(packed != 0)  # (W,) the words holding a survivor
    k = np.flatnonzero(packed[nonzero].view(np.bool_))  # their flags, in memory order
    return nonzero[k >> 3] * 8 + (k & 7)


def _heap_add(faiss: Any, vals: np.ndarray, ids: np.ndarray, block: np.ndarray) -> None:
    """Feed every row of `block` (c, m) C-contiguous to the min-heaps (vals, ids) (c, k)
    (faiss `float_minheap_array_t`: keeps the k largest), then sort them best first (numpy's
    argsort of the (c, k) rows, in place of the heap's own `reorder`)."""
    heaps = faiss.float_minheap_array_t()
    heaps.k, heaps.nh = int(vals.shape[1]), int(vals.shape[0])
    heaps.val, heaps.ids = faiss.swig_ptr(vals), faiss.swig_ptr(ids)
    heaps.addn(int(block.shape[1]), faiss.swig_ptr(block), 0, 0, int(vals.shape[0]))
    order = np.argsort(-vals, axis=1, kind="stable")  # (c, k) best first
    vals[:] = np.take_along_axis(vals, order, axis=1)
    ids[:] = np.take_along_axis(ids, order, axis=1)


def _kth_largest(part: np.ndarray, k: int) -> np.ndarray:
    """(c,) the k-th largest value of every row of `part` (c, s), 1 <= k <= s (-inf when
    masked entries fill the rows' top k): numpy's introselect, cheaper than a k-heap here."""
    s = part.shape[1]
    return np.partition(part, s - k, axis=1)[:, s - k]
