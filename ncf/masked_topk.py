"""Exact top-N by dot product with a per-query mask (courses already watched), on the CPU:
one matmul per block of queries, the masked entries set to -inf, then faiss's heap
(`HeapArray.addn`) per row, seeded with a threshold taken from the block's own scores.

    idx, scores = masked_top_k(queries, items_t, N, exclude_csr)

Why not faiss's search: it cannot mask per query, so the exclusion has to over-fetch (ask
for N + the chunk's largest excluded count and drop the excluded ids afterwards), and at
top-100 of 10,000 courses about half of faiss's time is the top-k, not the product: the heap
is replaced about N ln(m / N) times per row. Seeding every row's heap at a value a little
below its N-th largest score leaves it only the ~3N scores above that value to sort:

  threshold  the `SAMPLE_RANK`-th largest score among the row's first s columns of a randomly
             permuted catalogue (a random sample of its courses, the same for every row),
             with s chosen so that about 3N of the row's m scores exceed it;
  heap       faiss's min-heap of N (value, id) per row, filled with (threshold, -1) and fed
             the whole row: only scores above the threshold enter;
  exact      a row whose heap still holds a -1 at the end had fewer than N scores above its
             threshold; it is redone from an empty heap. So the result never depends on the
             sample, only the time does.

`ncf.retrieval.top_k_by_dot` uses it for exact search with an exclusion on catalogues up to
`MAX_ITEMS` courses; above that faiss's search with the over-fetch is faster (its top-k does
fewer replacements per score on long rows, while the sample here grows with m): at 60k
courses this path took 1.16x faiss's search without an exclusion and the over-fetch 1.31x,
at 100k 1.57x against 1.31x (benchmarks/results/retrieval.json, part sizes). Measured side by side in
`benchmarks/bench_retrieval.py`. Memory: one (block, m) float32 score block of ~16 MB (the
size faiss's search uses), the permuted (d, m) items and the (n, N) results.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ncf.ann import faiss_threads, load_faiss

__all__ = ["MAX_ITEMS", "SAMPLE_RANK", "masked_top_k"]

MAX_ITEMS = 65_536  # masked wins at 60k courses, the over-fetch at 100k (bench_retrieval)
SAMPLE_RANK = 8  # the threshold is the 8th largest sampled score: ~35% spread on ~3N above,
ABOVE = 3.0  # a row with fewer than N above its threshold is rare, and redone: exact
_BLOCK_FLOATS = 4 << 20  # scores per block: 16 MB, as faiss's 4,096 x 1,024 search blocks
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
    perm = np.random.default_rng(_SEED).permutation(m)  # (m,) permuted position -> item
    items_t = items.to("cpu", torch.float32)[torch.from_numpy(perm)].T.contiguous()  # (d, m)
    q = queries.to("cpu", torch.float32)
    sample = min(m, math.ceil(SAMPLE_RANK * m / (ABOVE * N)))  # ~3N scores above its top-8
    rank = min(SAMPLE_RANK, sample)
    block = int(np.clip(_BLOCK_FLOATS // max(m, 1), 16, 4096))
    if exclude is not None:
        where = np.empty(m, np.int64)
        where[perm] = np.arange(m)  # item -> permuted position
        ex_ptr, ex_col = exclude.indptr, where[exclude.indices]
    idx = np.full((n, N), -1, dtype=np.int64)
    scores = np.empty((n, N), dtype=np.float32)
    buf = torch.empty((block, m), dtype=torch.float32)  # (block, m) scores, reused
    starts = range(0, n, block)
    with faiss_threads(faiss):
        for lo in starts if track is None else track(starts, len(starts)):
            hi = min(n, lo + block)
            s = buf[: hi - lo]
            torch.mm(q[lo:hi], items_t, out=s)  # (c, m)
            flat = s.numpy()
            if exclude is not None and ex_ptr[hi] > ex_ptr[lo]:
                rows = np.repeat(np.arange(hi - lo, dtype=np.int64), np.diff(ex_ptr[lo : hi + 1]))
                flat.reshape(-1)[rows * m + ex_col[ex_ptr[lo] : ex_ptr[hi]]] = -np.inf
            seed = _kth_largest(faiss, flat[:, :sample], rank)  # (c,)
            out_s, out_i = scores[lo:hi], idx[lo:hi]
            out_s[:] = seed[:, None]  # a heap of equal values is a valid heap
            _heap_add(faiss, out_s, out_i, flat)
            short = np.flatnonzero(out_i[:, -1] < 0)  # fewer than N above the seed: redo
            if short.size:
                again_s = np.empty((short.size, N), np.float32)
                again_i = np.full((short.size, N), -1, dtype=np.int64)
                again_s[:] = -np.finfo(np.float32).max  # faiss's own empty value
                _heap_add(faiss, again_s, again_i, np.ascontiguousarray(flat[short]))
                out_s[short], out_i[short] = again_s, again_i
    hit = idx >= 0
    scores[~hit] = -np.inf  # padding: rows with fewer than N allowed items
    idx[hit] = perm[idx[hit]]  # permuted positions -> item indices
    return idx, scores


def _heap_add(
    faiss: Any, vals: np.ndarray, ids: np.ndarray, block: np.ndarray, *, sort: bool = True
) -> None:
    """Feed every row of `block` (c, m) C-contiguous to the min-heaps (vals, ids) (c, k)
    (faiss `float_minheap_array_t`: keeps the k largest); `sort`: then best first (numpy's
    argsort of the (c, k) rows, in place of the heap's own `reorder`)."""
    heaps = faiss.float_minheap_array_t()
    heaps.k, heaps.nh = int(vals.shape[1]), int(vals.shape[0])
    heaps.val, heaps.ids = faiss.swig_ptr(vals), faiss.swig_ptr(ids)
    heaps.addn(int(block.shape[1]), faiss.swig_ptr(block), 0, 0, int(vals.shape[0]))
    if sort:
        order = np.argsort(-vals, axis=1, kind="stable")  # (c, k) best first
        vals[:] = np.take_along_axis(vals, order, axis=1)
        ids[:] = np.take_along_axis(ids, order, axis=1)


def _kth_largest(faiss: Any, part: np.ndarray, k: int) -> np.ndarray:
    """(c,) the k-th largest value of every row of `part` (c, s) (-FLT_MAX when a row has
    fewer than k values above it, e.g. masked ones): the top of a k-heap fed the row."""
    vals = np.full((part.shape[0], k), -np.finfo(np.float32).max, dtype=np.float32)
    ids = np.full((part.shape[0], k), -1, dtype=np.int64)
    _heap_add(faiss, vals, ids, np.ascontiguousarray(part), sort=False)
    return vals[:, 0].copy()  # the heap's top: its smallest kept value
