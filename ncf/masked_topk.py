"""Exact top-N by dot product, optionally with a per-query mask (courses already watched),
on the CPU: one matmul per small block of queries, the masked entries set to -inf, then a
threshold select per row.

    idx, scores = masked_top_k(queries, items, N, exclude_csr)   # exclude_csr may be None

Why not faiss's search: it cannot mask per query, so the exclusion has to over-fetch (ask
for N + the chunk's largest excluded count and drop the excluded ids afterwards), and at
top-100 of 10,000 courses about half of faiss's time is its top-k, not the product: its heap
is replaced about N ln(m / N) times per row, a sift of log2(N) levels each. Here every block
of scores goes through `evaluation.threshold_select`: a threshold per row from a sample (the
first s columns of a randomly permuted catalogue: a random sample of its courses, the same
for every row), one compare and a word-wise `flatnonzero` over the block, and one sort of
64-bit keys over the ~2N survivors, best first. A row with fewer than N survivors is redone
with its exact N-th score as the threshold, so the result never depends on the sample.

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

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from evaluation import threshold_select as select

__all__ = ["MAX_ITEMS", "masked_top_k"]

MAX_ITEMS = 65_536  # above it faiss's search (bench_retrieval, part sizes)
_BLOCK_FLOATS = 512 << 10  # scores per block: 2 MB, so the block stays in cache between passes
_MIN_ROWS = 128  # rows per block: torch.mm (MKL) is slow on fewer rows
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
    n, m = int(queries.shape[0]), int(items.shape[0])
    if m > select.MAX_COLUMNS:  # the selection keys hold a column in fixed bits
        raise ValueError(f"masked_top_k: at most {select.MAX_COLUMNS:,} items; got {m:,}")
    perm = np.random.default_rng(_SEED).permutation(m)  # (m,) permuted position -> item
    items_t = items.to("cpu", torch.float32)[torch.from_numpy(perm)].T.contiguous()  # (d, m)
    q = queries.to("cpu", torch.float32)  # (n, d)
    sample, rank = select.sample_size(m, N)  # ~2N scores above the sample's rank-th
    block = int(np.clip(_BLOCK_FLOATS // max(m, 1), _MIN_ROWS, select.MAX_ROWS))
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
    for lo in starts if track is None else track(starts, len(starts)):
        hi = min(n, lo + block)
        torch.mm(q[lo:hi], items_t, out=buf[: hi - lo])  # (c, m)
        flat = buf[: hi - lo].numpy()
        if exclude is not None and ex_ptr[hi] > ex_ptr[lo]:
            rows = np.repeat(np.arange(hi - lo, dtype=np.int64), np.diff(ex_ptr[lo : hi + 1]))
            flat.reshape(-1)[rows * m + ex_col[ex_ptr[lo] : ex_ptr[hi]]] = -np.inf
        seed = select.kth_largest(flat[:, :sample], rank)  # (c,)
        out_i, out_s, short = select.select_above(flat, seed, N, hits)
        if short.size:  # fewer than N above the sampled seed: redone exactly
            out_i[short], out_s[short] = select.top_n_exact(flat[short], N, hits)
        idx[lo:hi], scores[lo:hi] = item_of[out_i], out_s  # positions -> item indices
    return idx, scores
