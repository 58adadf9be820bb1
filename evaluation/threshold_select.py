"""Exact top-N of every row of a float32 score block by a sampled threshold, on the CPU.

    idx, scores = top_n(block, N, *sample_size(m, N))        # one (c, m) block of scores
    idx, scores = dot_top_k(queries, items, N, exclude)      # products, blocked, excluded

Every row:

  threshold  the `rank`-th largest of a sample of the row's scores (`sample_size` says how
             many so that about `ABOVE` x N of the row's m scores exceed it): `np.partition`;
  select     one vectorised compare of the block against the thresholds into a flag buffer
             (reused across blocks), read back 8 flags to a 64-bit word: `flatnonzero` over
             the words, then over the flags of the few nonzero words (~2N of m survive);
  order      one sort of 64-bit keys (row | descending score | column) of the survivors: the
             lists come out best first, ties to the lower column;
  exact      a row with fewer than N survivors is reported in `short`, and `top_n_exact`
             redoes it with its exact N-th score as the threshold, so the result never
             depends on the sample, only the time.

It replaces a top-k whose cost is per score (`torch.topk`, faiss's heap: a sift for every
score that enters) by a compare per score and a few passes per survivor. Used by
`dot_top_k` (products in cache-sized blocks and an exclusion: `ncf.retrieval.top_k_by_dot`
and the `Factors` score source of `evaluation.full_ranking_topk`) and by
`evaluation.full_ranking_topk` on any other CPU float32 score source. Measured in `benchmarks/bench_retrieval.py`. Entries at -inf (excluded) never
survive; NaN never survives either, so callers that must reject NaN check for it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "ABOVE", "MAX_COLUMNS", "SAMPLE_RANK",
    "cannot_overflow", "dot_top_k", "kth_largest", "sample_of", "sample_size", "select_above", "top_n",
    "top_n_exact",
]  # fmt: skip

SAMPLE_RANK = 16  # the threshold is the 16th largest sampled score: ~25% spread on ~2N above,
ABOVE = 2.0  # fewer than N above the threshold: ~0.5% of rows by that spread; redone, exact
MAX_SAMPLE_SHARE = 8  # a sample of at most 1/8 of the row (so ~16 x 8 = 128 survive at least)
_COL_BITS = 20  # selection keys: row (12 bits) | score (32) | column (20)
MAX_COLUMNS = 1 << _COL_BITS
MAX_ROWS = 1 << (64 - 32 - _COL_BITS)  # rows a block may have: the keys' row bits
_SIGN = np.uint32(0x80000000)


def sample_size(m: int, N: int) -> tuple[int, int]:
    """(s, rank): sample s of a row's m scores, threshold = their rank-th largest, so that
    about ABOVE x N scores of the row exceed it; for a small N (the sample would be most of
    the row, and its partition the largest cost) at most m / 8 + rank, so more survive."""
    s = min(math.ceil(SAMPLE_RANK * m / (ABOVE * N)), m // MAX_SAMPLE_SHARE + SAMPLE_RANK)
    s = min(m, s)
    return s, min(SAMPLE_RANK, s)


def cannot_overflow(q: torch.Tensor, items: torch.Tensor) -> bool:
    """|q_i . x_j| <= |q_i| |x_j| (Cauchy-Schwarz, for every partial sum too), so when the
    largest norms multiply to well below float32's max no score is inf or NaN. Row norms in
    the input dtype: no float64 copy; an overflow to inf only makes the answer "no"."""
    if q.shape[0] == 0 or items.shape[0] == 0:
        return True
    qn = float(torch.linalg.vector_norm(q, dim=1).max())
    xn = float(torch.linalg.vector_norm(items, dim=1).max())
    return qn * xn < 1e37


def kth_largest(part: np.ndarray, k: int) -> np.ndarray:
    """(c,) the k-th largest value of every row of `part` (c, s), 1 <= k <= s (-inf when
    masked entries fill the rows' top k): numpy's introselect, in place (`part` is scratch),
    cheaper than a k-heap here."""
    s = part.shape[1]
    part.partition(s - k, axis=1)
    return part[:, s - k].copy()


_RUNS = 16  # the sample: 16 runs of consecutive columns spread evenly over the row


def sample_of(flat: np.ndarray, size: int) -> np.ndarray:
    """(c, >= size) a copy of `size` or a few more of the columns of `flat` (c, m): `_RUNS`
    runs of consecutive columns, one at the start of each sixteenth of the row. A run is read
    whole cache lines at a time (a column stride would touch every line of the row), and
    the runs spread the sample over the catalogue's order (a prefix would follow it, e.g.
    courses sorted by popularity). Any sample keeps the select exact; a poor one costs time."""
    c, m = flat.shape
    if m < _RUNS * 8 or size * 2 > m:  # a short row or most of it: a prefix is the sample
        return flat[:, :size].copy()
    width = m // _RUNS  # (c, runs, width) view of the first runs x width columns
    run = -(-size // _RUNS)
    runs = flat[:, : _RUNS * width].reshape(c, _RUNS, width)[:, :, :run]  # a view
    out = runs.reshape(c, _RUNS * run)  # run < width: the runs cannot merge, so a copy
    return out.copy() if np.may_share_memory(out, flat) else out  # kth_largest writes to it


def select_above(
    flat: np.ndarray, seed: np.ndarray, N: int, hits: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The N best of each row of `flat` (c, m) C-contiguous float32 among its scores above
    `seed` (c,), best first, ties to the lower column (-0.0 ties with +0.0): (idx (c, N)
    int64 columns, scores (c, N) float32 (the caller's bits), short (s,) the rows with fewer
    than N scores above their seed, whose lists hold those scores and then -1 / -inf:
    incomplete unless the seed was below every finite score, see `top_n_exact`).
    c <= MAX_ROWS, m <= MAX_COLUMNS. hits: optional reused bool buffer of at least
    c * m + 8 entries."""
    c, m = flat.shape
    if c > MAX_ROWS or m > MAX_COLUMNS:  # the keys hold a row and a column in fixed bits
        raise ValueError(f"select_above: at most ({MAX_ROWS:,}, {MAX_COLUMNS:,}); got {flat.shape}")
    pos = _positions_above(flat, seed, hits)  # (K,) row-major positions above the seed
    if pos.size == 0:  # nothing above any seed: every row is short
        return np.full((c, N), -1, np.int64), np.full((c, N), -np.inf, np.float32), np.arange(c)
    rows = pos // m
    bits = flat.reshape(-1)[pos].view(np.uint32)  # (K,) the scores' IEEE bits
    positive = bool(seed.min() >= 0)  # every survivor > 0: its bits order as its score
    if positive:
        desc = _SIGN - 1 - bits
    else:  # -0.0 == +0.0, but its bits would key it below +0.0: as +0.0, the column decides
        bits[bits == _SIGN] = 0  # (bits is a copy: the caller's -0.0 is left alone)
        desc = np.where(bits >= _SIGN, bits, ~bits & ~_SIGN)
    keys = (rows.astype(np.uint64) << (32 + _COL_BITS)) | (desc.astype(np.uint64) << _COL_BITS)
    keys |= (pos - rows * m).astype(np.uint64)  # column < 2**_COL_BITS, row < MAX_ROWS
    keys.sort()  # by row, then best score first (ascending desc), ties by column
    count = np.bincount(rows, minlength=c)  # (c,) survivors per row
    first = np.cumsum(count) - count  # (c,) each row's first key
    pick = np.minimum(first[:, None] + np.arange(N), keys.size - 1)  # (c, N); short rows: junk
    take = keys[pick]
    desc = (take >> _COL_BITS).astype(np.uint32)  # the row bits fall off in the cast
    bits = _SIGN - 1 - desc if positive else np.where(desc >= _SIGN, desc, ~desc & ~_SIGN)
    out_i = (take & np.uint64(MAX_COLUMNS - 1)).astype(np.int64)
    if not positive:  # a zero may be a -0.0 keyed as +0.0: the caller's own bits back
        r, j = np.nonzero(bits == 0)  # (z,) each; few (zeros among the N best)
        bits[r, j] = flat[r, out_i[r, j]].view(np.uint32)
    out_s = bits.view(np.float32)
    short = np.flatnonzero(count < N)
    if short.size:  # past a short row's survivors: padding, not the next row's keys
        past = np.arange(N) >= count[short, None]  # (s, N)
        out_i[short] = np.where(past, -1, out_i[short])
        out_s[short] = np.where(past, -np.inf, out_s[short])
    return out_i, out_s, short


def top_n_exact(
    rows: np.ndarray, N: int, hits: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(idx (s, N) int64, scores (s, N) float32): the N best of each row of `rows` (s, m)
    C-contiguous float32, best first, ties to the lower column; -1 / -inf past a row's
    finite scores. The redo of `select_above`'s short rows: the threshold is just below the
    row's exact N-th largest score (`np.partition` of the whole row), so every score tied
    with it survives and the key sort picks among them by column."""
    s, m = rows.shape
    whole = m <= N  # every finite score is in the list: no N-th largest to find
    kth = np.full(s, -np.inf, np.float32) if whole else np.partition(rows, m - N, axis=1)[:, m - N]
    seed = np.nextafter(kth, np.float32(-np.inf))  # strictly below it: its ties survive
    idx, scores, _ = select_above(rows, seed, N, hits)  # short now: fewer than N finite
    return idx, scores


def top_n(
    flat: np.ndarray, N: int, size: int, rank: int, hits: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(idx (c, N) int64, scores (c, N) float32): the N best of each row of the block `flat`
    (c, m) C-contiguous float32, best first, ties to the lower column, -1 / -inf past a row's
    finite scores. The whole select: the threshold from a sample of `size` columns
    (`sample_size` gives size and rank), the survivors above it, and the short rows redone
    exactly."""
    seed = kth_largest(sample_of(flat, size), rank)  # (c,)
    idx, scores, short = select_above(flat, seed, N, hits)
    if short.size:  # fewer than N above the sampled seed: redone exactly
        idx[short], scores[short] = top_n_exact(flat[short], N, hits)
    return idx, scores


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


_BLOCK_FLOATS = 512 << 10  # scores per product block: 2 MB, so it stays in cache between passes
_MIN_ROWS = 128  # rows per block: torch.mm (MKL) is slow on fewer rows


def dot_top_k(
    queries: torch.Tensor,
    items: torch.Tensor,
    N: int,
    exclude: sp.csr_array | None = None,
    *,
    track: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(idx (n, N) int64, scores (n, N) float32): the N largest `queries @ items.T` of every
    row, best first, ties to the lower item index, never an entry stored in `exclude` (n, m);
    -1 / -inf past a row's allowed items. queries (n, d) and items (m, d) float32 on the CPU,
    finite, with scores that cannot overflow (the caller checks); m <= MAX_COLUMNS.
    track: optional wrapper of the block loop (progress).

    One product per block of 2 MB of scores (at least 128 rows) into a reused buffer, so the
    block is still in cache for the compare, the excluded entries set to -inf, then the
    threshold select (its sample: `sample_of`). Memory: the (block, m)
    scores and flags and the (n, N) results.

    Why not faiss's flat search: it cannot mask per query, so an exclusion has to over-fetch,
    and at top-100 of 10,000 courses about half of its time is its heap (replaced about
    N ln(m / N) times per row, a sift of log2(N) levels each). The product is torch's (on its
    thread count): numpy's OpenBLAS multiplied faster on an AMD box, but bounding its threads
    sets them process-wide, and resetting numpy's BLAS threads made UMAP's seeded layouts
    irreproducible later in the same process."""
    n, m = int(queries.shape[0]), int(items.shape[0])
    if m > MAX_COLUMNS:  # the selection keys hold a column in fixed bits
        raise ValueError(f"dot_top_k: at most {MAX_COLUMNS:,} items; got {m:,}")
    items_t = items.to("cpu", torch.float32).T.contiguous()  # (d, m)
    q = queries.to("cpu", torch.float32)  # (n, d)
    size, rank = sample_size(m, N)
    block = int(np.clip(_BLOCK_FLOATS // max(m, 1), _MIN_ROWS, MAX_ROWS))
    if exclude is not None:
        ex_ptr, ex_col = exclude.indptr, exclude.indices.astype(np.int64, copy=False)
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
        idx[lo:hi], scores[lo:hi] = top_n(flat, N, size, rank, hits)
    return idx, scores
