"""Co-watch similarity: a sparse course x course matrix from a learner x course watch matrix.

The caller builds the watch matrix from the watched events of one time window, e.g.
``log.interactions(window_events)`` (learner x course, any values; an entry > 0 means
"watched"). The matrix is binarized, so a learner who watched a course twice counts once.

With B the binarized (n_learners x n_courses) matrix, C = B.T @ B holds the co-watch counts:
C[i, j] = number of learners who watched both i and j, and n_i = C[i, i] = watchers of i.

    cosine   C_ij / sqrt(n_i * n_j)
    jaccard  C_ij / (n_i + n_j - C_ij)
    pmi      max(0, log(C_ij * N / (n_i * n_j)))   (positive PMI; natural log)

N, for PMI, is the number of *active* learners: rows of the watch matrix with at least one
watch. Learners with no watch in the window are padding of the learners table, not
evidence, and counting them would inflate every PMI by log(n_learners / N).

Rules of the result (CSR float32, n_courses x n_courses, canonical: sorted column indices):
- no self-similarity: the diagonal is never stored;
- pairs with C_ij < min_count are dropped before anything else;
- only strictly positive similarities are stored (PMI <= 0 is dropped, as PPMI says);
- top_k keeps, per row, the k largest values; ties go to the smaller course index, so the
  result is deterministic. Rows are therefore not symmetric after top-k.

C is computed in blocks of course rows, C[a:b] = B[:, a:b].T @ B, and every rule above is
applied to the block before the next one is computed, so memory is bounded by the block
size (about block_size x n_courses co-watch pairs at worst), never by n_courses ** 2. Each
entry is a function of C_ij, n_i, n_j and N only, and top-k is per row, so the result is
identical whatever the block size. The default, 256 rows, was the fastest measured
(benchmarks/bench_cowatch.py: 10M events x 10,000 courses, 6.6 s and 0.37 GiB peak; 2,048
rows took 9.7 s and 0.75 GiB): small blocks keep the sparse product's working set in cache.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from watchlog.progress import progress

__all__ = ["MEASURES", "CoWatchSimilarity", "cowatch_similarity", "binarize_watches"]

_log = logging.getLogger(__name__)

MEASURES = ("cosine", "jaccard", "pmi")
_N_EXAMPLES = 5


# ---- input checks ---------------------------------------------------------------------------
def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        kind = "an int or None" if allow_none else "an int"
        raise TypeError(f"{name}: expected {kind} >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def _check_params(measure: str, top_k, min_count, block_size) -> None:
    if measure not in MEASURES:
        raise ValueError(f"measure: must be one of {MEASURES}, got {measure!r}")
    _check_int("top_k", top_k, 1, allow_none=True)
    _check_int("min_count", min_count, 1)
    _check_int("block_size", block_size, 1)


def binarize_watches(watch_matrix) -> sp.csr_matrix:
    """Validated learner x course watch matrix -> CSR int32 with a 1 where the value is > 0.

    Accepts any scipy.sparse matrix/array or a 2-D array-like. Values must be finite and
    >= 0 (a negative watch is a caller bug, not a "no"); zeros, stored or not, are "not
    watched". Repeated (learner, course) entries of a COO input are summed first.
    """
    if sp.issparse(watch_matrix):
        x = sp.csr_matrix(watch_matrix)  # a copy only when the format changes
    else:
        arr = np.asarray(watch_matrix)
        if arr.ndim != 2:
            raise ValueError(
                "watch_matrix: expected a 2-D learner x course matrix, "
                f"got an array of shape {arr.shape}"
            )
        _check_real(arr.dtype, arr.shape)
        x = sp.csr_matrix(arr)
    _check_real(x.dtype, x.shape)
    if not x.has_canonical_format:
        x = x.copy()  # never sort / sum the caller's arrays in place
        x.sum_duplicates()
    data = x.data
    if data.dtype != np.bool_:
        bad = ~np.isfinite(data) | (data < 0)
        if bad.any():
            where = np.flatnonzero(bad)
            rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))[where[:_N_EXAMPLES]]
            examples = ", ".join(
                f"(learner {r}, course {c}): {v}"
                for r, c, v in zip(
                    rows, x.indices[where[:_N_EXAMPLES]], data[where[:_N_EXAMPLES]], strict=True
                )
            )
            raise ValueError(
                f"watch_matrix {x.shape}: values must be finite and >= 0 -- "
                f"{len(where):,} of {x.nnz:,} stored entries are not, e.g. {examples}"
            )
    keep = data > 0
    # B keeps only the watched pattern; int32 so co-watch counts stay exact integers.
    if keep.all():  # the usual case (counts or watch seconds): no stored zero to drop
        indices, indptr = x.indices.copy(), x.indptr.copy()
    else:
        indices, indptr = x.indices[keep], _filtered_indptr(x, keep)
    return sp.csr_matrix((np.ones(len(indices), dtype=np.int32), indices, indptr), shape=x.shape)


def _check_real(dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)) and not (
        dtype == np.bool_
    ):
        raise TypeError(
            f"watch_matrix {shape}: expected real numbers (counts, watch seconds), got dtype {dtype}"
        )


def _filtered_indptr(x: sp.csr_matrix, keep: np.ndarray) -> np.ndarray:
    """indptr of `x` after dropping the entries where `keep` is False (order preserved)."""
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return kept_before[x.indptr].astype(x.indptr.dtype, copy=False)


# ---- the computation ------------------------------------------------------------------------
def _measure_values(
    measure: str, c: np.ndarray, n_row: np.ndarray, n_col: np.ndarray, n_active: int
) -> np.ndarray:
    """Similarity of each co-watch pair, float64 (shapes: all (m,))."""
    c = c.astype(np.float64)
    if measure == "cosine":
        return c / np.sqrt(n_row.astype(np.float64) * n_col)
    if measure == "jaccard":
        return c / (n_row.astype(np.float64) + n_col - c)
    # pmi: log(p_ij / (p_i p_j)) with p = count / N
    return np.log(c * n_active / (n_row.astype(np.float64) * n_col))


def _sort_block(
    row: np.ndarray,
    col: np.ndarray,
    values: np.ndarray,
    n_rows: int,
    top_k: int | None,
    col_bits: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply top-k and put each row's entries in increasing column order.

    row (m,) block-local row of each entry (nondecreasing), col (m,) any order within a row,
    values (m,) float32 > 0. Returns (row, col, values) of the kept entries, canonical order.

    Instead of an argsort (5x slower than a plain sort of uint64 here), each entry is packed
    into ONE uint64 and the keys are sorted, then unpacked:
      top-k key:  row | ~float_bits(value) | col   -> row, value descending, column ascending
      order key:  row | col | float_bits(value)    -> canonical CSR order
    For float32 > 0 the IEEE bit pattern is increasing in the value, so the packing is exact.
    The caller keeps n_rows <= 2 ** (32 - col_bits) so that both keys fit in 64 bits.
    """
    low = np.uint64((1 << col_bits) - 1)
    mask32 = np.uint64(0xFFFFFFFF)
    shift_val, shift_row = np.uint64(col_bits), np.uint64(32 + col_bits)
    counts = np.bincount(row, minlength=n_rows)  # (n_rows,) entries per row
    if top_k is not None and counts.max(initial=0) > top_k:
        # top-k key, built in place: (m,) uint64
        key = row.astype(np.uint64)
        key <<= shift_row
        inv = values.view(np.uint32).astype(np.uint64)
        np.subtract(mask32, inv, out=inv)
        inv <<= shift_val
        key |= inv
        del inv
        key |= col.astype(np.uint64)
        key.sort()
        # Sorting keeps each row's run where it was (row is the leading field and `row` is
        # nondecreasing), so the rank of sorted entry i is i minus the start of row[i]'s run.
        run_start = np.cumsum(counts) - counts
        keep = np.arange(len(key)) - run_start[row] < top_k
        key = key[keep]
        r = row[keep].astype(np.uint64)
        bits = mask32 - ((key >> shift_val) & mask32)
        c = key & low
        del key
    else:
        r, c = row.astype(np.uint64), col.astype(np.uint64)
        bits = values.view(np.uint32).astype(np.uint64)
    key = np.sort((r << shift_row) | (c << np.uint64(32)) | bits)
    return (
        (key >> shift_row).astype(np.intp),
        ((key >> np.uint64(32)) & low).astype(np.int64),
        (key & mask32).astype(np.uint32).view(np.float32),
    )


def _block(
    bt: sp.csr_matrix,
    b: sp.csr_matrix,
    start: int,
    stop: int,
    n_watchers: np.ndarray,
    n_active: int,
    measure: str,
    top_k: int | None,
    min_count: int,
    col_bits: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows start:stop of the similarity: (row counts (stop-start,), columns, float32 values,
    number of candidate pairs before top-k)."""
    counts = bt[start:stop] @ b  # (block, n_courses) int32 co-watch counts, columns unsorted
    n_rows = stop - start
    row = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(counts.indptr))
    col = counts.indices
    c = counts.data
    keep = col != row + start  # no self-similarity
    if min_count > 1:
        keep &= c >= min_count
    row, col, c = row[keep], col[keep], c[keep]
    del counts, keep
    vals = _measure_values(measure, c, n_watchers[row + start], n_watchers[col], n_active)
    vals = vals.astype(np.float32)
    pos = vals > 0  # PPMI drops PMI <= 0; cosine and Jaccard are > 0 for every co-watched pair
    if not pos.all():
        row, col, vals = row[pos], col[pos], vals[pos]
    n_candidates = len(vals)
    row, col, vals = _sort_block(row, col, vals, n_rows, top_k, col_bits)
    return np.bincount(row, minlength=n_rows), col, vals, n_candidates


def _compute(
    watch_matrix, measure: str, top_k: int | None, min_count: int, block_size: int
) -> tuple[sp.csr_matrix, dict[str, Any]]:
    _check_params(measure, top_k, min_count, block_size)
    b = binarize_watches(watch_matrix)  # (n_learners, n_courses) int32 0/1
    n_courses = b.shape[1]
    bt = b.T.tocsr()  # (n_courses, n_learners): row i = watchers of course i
    n_watchers = np.diff(bt.indptr).astype(np.int64)  # n_i
    n_active = int(np.count_nonzero(np.diff(b.indptr)))  # N: learners with >= 1 watch
    row_counts, cols, vals = [], [], []
    n_candidates = 0
    # Row, value and column of an entry are packed in one uint64 for sorting (`_sort_block`):
    # column takes col_bits, value 32, so a block may hold at most 2 ** (32 - col_bits) rows
    # (262,144 for 10,000 courses). Blocks never change the result, so clamping is harmless.
    col_bits = max(1, (n_courses - 1).bit_length())
    if col_bits > 31:
        raise ValueError(f"watch_matrix {b.shape}: at most 2**31 courses are supported")
    step = min(block_size, 1 << (32 - col_bits))
    starts = progress(range(0, n_courses, step), desc="co-watch blocks", unit="blocks", logger=_log)
    for start in starts:
        stop = min(start + step, n_courses)
        rc, col, val, cand = _block(
            bt, b, start, stop, n_watchers, n_active, measure, top_k, min_count, col_bits
        )
        row_counts.append(rc)
        cols.append(col)
        vals.append(val)
        n_candidates += cand
    indptr = np.zeros(n_courses + 1, dtype=np.int64)
    if n_courses:
        np.cumsum(np.concatenate(row_counts), out=indptr[1:])
    nnz = int(indptr[-1])
    idx_dtype = np.int32 if max(nnz, n_courses) < np.iinfo(np.int32).max else np.int64
    sim = sp.csr_matrix(
        (
            np.concatenate(vals) if vals else np.zeros(0, np.float32),
            np.concatenate(cols).astype(idx_dtype) if cols else np.zeros(0, idx_dtype),
            indptr.astype(idx_dtype),
        ),
        shape=(n_courses, n_courses),
    )
    sim.has_sorted_indices = True  # columns of each row kept in increasing order throughout
    stats = {
        "n_learners": int(b.shape[0]),
        "n_courses": int(n_courses),
        "n_active_learners": n_active,
        "n_watches": int(b.nnz),
        "n_candidate_pairs": int(n_candidates),
        "n_pairs": nnz,
    }
    return sim, {"n_watchers": n_watchers, **stats}


def cowatch_similarity(
    watch_matrix,
    measure: str = "cosine",
    *,
    top_k: int | None = 50,
    min_count: int = 1,
    block_size: int = 256,
) -> sp.csr_matrix:
    """Course x course co-watch similarity, CSR float32 (n_courses, n_courses).

    watch_matrix: learner x course (any sparse format or 2-D array), entry > 0 = watched.
    measure: "cosine", "jaccard" or "pmi" (positive PMI, N = learners with >= 1 watch).
    top_k: keep the k largest per row (ties to the lower course index); None keeps all.
    min_count: drop pairs co-watched by fewer than this many learners.
    block_size: course rows per block; bounds memory, never changes the result.
    """
    return _compute(watch_matrix, measure, top_k, min_count, block_size)[0]


class CoWatchSimilarity(BaseEstimator):
    """scikit-learn-style wrapper around `cowatch_similarity`.

    After `fit(watch_matrix)`:
      similarity_        CSR float32 (n_courses, n_courses), rules as in the module doc
      course_watchers_   (n_courses,) int64: learners who watched each course (n_i)
      n_learners_, n_courses_, n_active_learners_ (N of PMI), n_watches_ (binarized nnz)
      n_candidate_pairs_ ordered off-diagonal pairs passing min_count (and > 0) before top-k
    """

    def __init__(
        self,
        measure: str = "cosine",
        top_k: int | None = 50,
        min_count: int = 1,
        block_size: int = 256,
    ):
        self.measure = measure
        self.top_k = top_k
        self.min_count = min_count
        self.block_size = block_size

    def fit(self, watch_matrix, y=None) -> CoWatchSimilarity:
        sim, stats = _compute(
            watch_matrix, self.measure, self.top_k, self.min_count, self.block_size
        )
        self.similarity_ = sim
        self.course_watchers_ = stats["n_watchers"]
        self.n_learners_ = stats["n_learners"]
        self.n_courses_ = stats["n_courses"]
        self.n_active_learners_ = stats["n_active_learners"]
        self.n_watches_ = stats["n_watches"]
        self.n_candidate_pairs_ = stats["n_candidate_pairs"]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "similarity_"):
            raise RuntimeError("CoWatchSimilarity is not fitted: call fit(watch_matrix) first")

    # ---- plain-data state (no pickle) ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Parameters and fitted state as JSON-able lists and numbers."""
        self._check_fitted()
        s = self.similarity_
        return {
            "type": "CoWatchSimilarity",
            "version": 1,
            "params": self.get_params(),
            "n_learners": self.n_learners_,
            "n_courses": self.n_courses_,
            "n_active_learners": self.n_active_learners_,
            "n_watches": self.n_watches_,
            "n_candidate_pairs": self.n_candidate_pairs_,
            "course_watchers": self.course_watchers_.tolist(),
            "indptr": s.indptr.tolist(),
            "indices": s.indices.tolist(),
            # float32 -> Python float is exact, and back to float32 is exact again
            "data": s.data.astype(np.float64).tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> CoWatchSimilarity:
        if state.get("type") != "CoWatchSimilarity":
            raise ValueError(
                f"from_dict: expected type 'CoWatchSimilarity', got {state.get('type')!r}"
            )
        if state.get("version") != 1:
            raise ValueError(f"from_dict: unsupported version {state.get('version')!r}")
        self = cls(**state["params"])
        n = int(state["n_courses"])
        indptr = np.asarray(state["indptr"], dtype=np.int64)
        if indptr.shape != (n + 1,):
            raise ValueError(
                f"from_dict: indptr must have n_courses + 1 = {n + 1} entries, got {indptr.shape}"
            )
        self.similarity_ = sp.csr_matrix(
            (
                np.asarray(state["data"], dtype=np.float32),
                np.asarray(state["indices"], dtype=np.int32 if n < 2**31 - 1 else np.int64),
                indptr,
            ),
            shape=(n, n),
        )
        self.course_watchers_ = np.asarray(state["course_watchers"], dtype=np.int64)
        self.n_learners_ = int(state["n_learners"])
        self.n_courses_ = n
        self.n_active_learners_ = int(state["n_active_learners"])
        self.n_watches_ = int(state["n_watches"])
        self.n_candidate_pairs_ = int(state["n_candidate_pairs"])
        return self
