"""GLMix design matrices per event row, and the crosses that go into them.

`face_split(a, b)` is the row-wise Kronecker ("face-splitting") product used for crosses;
`design_matrices(...)` gathers the per-event designs from entity-level `FeatureBlock`s
(`FeatureEncoder.encode(table)`): `global` = [learner features | course features | requested
crosses], `per_learner` = course features of the row's course, `per_course` = learner features
of the row's learner. Arithmetic on the CSR arrays and CSR row gathers; no loop per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from watchlog.features import INTERCEPT, FeatureBlock, FeatureEncoder, to_csr32

__all__ = ["DEFAULT_COORDINATES", "face_split", "design_matrices"]

_N_EXAMPLES = 5


# ---- crosses --------------------------------------------------------------------------------
def face_split(
    a, b, names_a: Sequence[str] | None = None, names_b: Sequence[str] | None = None
) -> tuple[sp.csr_matrix, list[str] | None]:
    """Row-wise Kronecker product: (n, p) and (n, q) -> (n, p*q) CSR float32.

    out[i, j*q + l] = a[i, j] * b[i, l], i.e. out[i] = kron(a[i], b[i]). Names, when both
    are given, are `name_a*name_b` in the same column order. Computed on the CSR arrays
    (np.repeat arithmetic): output nnz = sum_i nnz(a[i]) * nnz(b[i]); no loop per row.
    """
    a, b = to_csr32(a), to_csr32(b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"face_split: both blocks need the same rows, got a {a.shape} and b {b.shape}"
        )
    if (names_a is None) != (names_b is None):
        raise ValueError("face_split: give names for both blocks or for neither")
    if names_a is not None and (len(names_a) != a.shape[1] or len(names_b) != b.shape[1]):
        raise ValueError(
            f"face_split: {len(names_a)} and {len(names_b)} names for blocks "
            f"{a.shape} and {b.shape}"
        )
    # to_csr32 may share the caller's arrays (a float32 CSR): sort and sum on a copy
    a, b = (m if m.has_canonical_format else _canonical_copy(m) for m in (a, b))
    n, p = a.shape
    q = b.shape[1]
    na = np.diff(a.indptr).astype(np.int64)  # (n,)
    nb = np.diff(b.indptr).astype(np.int64)  # (n,)
    row_a = np.repeat(np.arange(n), na)  # (nnz_a,) row of each entry of a
    reps = nb[row_a]  # (nnz_a,) each a entry pairs with every b entry of its row
    total = int(reps.sum())
    a_ent = np.repeat(np.arange(a.nnz), reps)  # (total,) which a entry
    # offset of each output inside its a entry's run of b entries
    run_start = np.cumsum(reps) - reps
    k = np.arange(total, dtype=np.int64) - np.repeat(run_start, reps)
    b_ent = np.repeat(b.indptr[:-1].astype(np.int64)[row_a], reps) + k  # (total,) which b entry
    idx_dtype = np.int64 if p * q > np.iinfo(np.int32).max else np.int32
    cols = (a.indices[a_ent].astype(np.int64) * q + b.indices[b_ent]).astype(idx_dtype)
    data = a.data[a_ent] * b.data[b_ent]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(na * nb, out=indptr[1:])
    if idx_dtype == np.int32 and total < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    # a's columns ascending, then b's: j*q + l ascending within each row: canonical CSR
    out = sp.csr_matrix((data, cols, indptr), shape=(n, p * q))
    out.has_sorted_indices = True
    names = None
    if names_a is not None:
        names = [f"{x}*{y}" for x in names_a for y in names_b]
    return out, names


# ---- GLMix designs --------------------------------------------------------------------------
DEFAULT_COORDINATES: dict[str, tuple[Any, ...]] = {
    "per_learner": ("course",),
    "per_course": ("learner",),
}


def _canonical_copy(m: sp.csr_matrix) -> sp.csr_matrix:
    """A copy of `m` with sorted columns and no duplicates (summed)."""
    m = m.copy()
    m.sum_duplicates()
    return m


def _as_block(x, what: str) -> FeatureBlock:
    if isinstance(x, FeatureBlock):
        return x
    if isinstance(x, FeatureEncoder):
        raise TypeError(f"{what}: pass encoder.encode(table), not the encoder itself")
    m = to_csr32(x)
    return FeatureBlock(m, tuple(f"x{j}" for j in range(m.shape[1])), {})


def _as_index(idx, n: int, what: str) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what}: expected integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        pos = np.flatnonzero(bad)[:_N_EXAMPLES]
        ex = ", ".join(f"row {p}: {arr[p]}" for p in pos)
        raise IndexError(
            f"{what}: indices must be in [0, {n}) (rows of its feature block) -- "
            f"{int(bad.sum()):,} of {len(arr):,} are not, e.g. {ex}"
        )
    return arr


class _Sides:
    """Entity blocks, their per-event gathers (computed once, on first use), and term parsing.
    shared: entity-level results (within-table crosses, entries per entity row), shared by
    the row chunks of one build."""

    def __init__(
        self,
        blocks: dict[str, FeatureBlock],
        index: dict[str, np.ndarray],
        prefixes,
        shared: dict[tuple, Any] | None = None,
    ):
        self.blocks, self.index, self.prefixes = blocks, index, prefixes
        self._gathered: dict[str, sp.csr_matrix] = {}
        self._shared = {} if shared is None else shared

    def parse(self, term: str) -> tuple[str, str | None]:
        if not isinstance(term, str):
            raise TypeError(f"design term: expected a string or a pair of strings, got {term!r}")
        side, _, group = term.partition(".")
        if side not in self.blocks:
            raise ValueError(
                f"design term {term!r}: must start with one of {sorted(self.blocks)} "
                "(e.g. 'course' or 'course.category')"
            )
        if group and group not in self.blocks[side].groups:
            raise ValueError(
                f"design term {term!r}: {side} block has no group {group!r}; groups are "
                f"{sorted(self.blocks[side].groups)}"
            )
        return side, group or None

    def entity(self, side: str, group: str | None) -> FeatureBlock:
        """The selected columns at entity level (one row per learner / course)."""
        block = self.blocks[side]
        sel = block if group is None else block.select(group)
        return FeatureBlock(sel.matrix, tuple(self.prefixes[side] + s for s in sel.names))

    def row_counts(self, term) -> np.ndarray:
        """(rows,) int64: the entries of each row of `rows(term)`, from the entity-level
        blocks alone (no per-event matrix)."""
        if isinstance(term, tuple | list):
            (sa, ga), (sb, gb) = self.parse(term[0]), self.parse(term[1])
            if sa == sb:
                return _row_nnz(self._entity_cross(sa, ga, gb)[0])[self.index[sa]]
            # face_split pairs every entry of a row of one side with every one of the other's
            # (after summing duplicates)
            ca, cb = self._entity_counts(sa, ga, True), self._entity_counts(sb, gb, True)
            return ca[self.index[sa]] * cb[self.index[sb]]
        side, group = self.parse(term)
        return self._entity_counts(side, group, False)[self.index[side]]

    def _entity_counts(self, side: str, group: str | None, canonical: bool) -> np.ndarray:
        key = ("counts", side, group, canonical)
        if key not in self._shared:
            m = self.entity(side, group).matrix
            if canonical and not m.has_canonical_format:
                m = _canonical_copy(m)
            self._shared[key] = _row_nnz(m)
        return self._shared[key]

    def _entity_cross(self, side: str, ga: str | None, gb: str | None):
        """(matrix, names): the within-table cross at entity level, computed once."""
        key = ("cross", side, ga, gb)
        if key not in self._shared:
            ea, eb = self.entity(side, ga), self.entity(side, gb)
            self._shared[key] = face_split(ea.matrix, eb.matrix, ea.names, eb.names)
        return self._shared[key]

    def gathered(self, side: str) -> sp.csr_matrix:
        if side not in self._gathered:  # one CSR row gather per side: matrix[idx]
            self._gathered[side] = to_csr32(self.blocks[side].matrix[self.index[side]])
        return self._gathered[side]

    def rows(self, term) -> tuple[sp.csr_matrix, tuple[str, ...]]:
        """One design term at event level: a selector string or a cross (selector, selector)."""
        if isinstance(term, tuple | list):
            if len(term) != 2:
                raise ValueError(f"cross term: expected a pair of selectors, got {term!r}")
            (sa, ga), (sb, gb) = self.parse(term[0]), self.parse(term[1])
            ea, eb = self.entity(sa, ga), self.entity(sb, gb)
            if sa == sb:  # within one table: cross the entities (once), then gather the rows
                m, names = self._entity_cross(sa, ga, gb)
                return to_csr32(m[self.index[sa]]), tuple(names)
            m, names = face_split(
                self._select_rows(sa, ga), self._select_rows(sb, gb), ea.names, eb.names
            )
            return m, tuple(names)
        side, group = self.parse(term)
        return self._select_rows(side, group), self.entity(side, group).names

    def _select_rows(self, side: str, group: str | None) -> sp.csr_matrix:
        g = self.gathered(side)
        if group is None:
            return g
        lo, hi = self.blocks[side].groups[group]
        return to_csr32(g[:, lo:hi])


def _index_dtype(cols: int, nnz: int) -> type:
    """The CSR index dtype scipy would choose for `cols` columns and `nnz` entries."""
    return np.int64 if max(cols - 1, nnz) > np.iinfo(np.int32).max else np.int32


def _allocated_csr(indptr: np.ndarray, cols: int) -> sp.csr_matrix:
    """A float32 CSR with these row pointers, its data and indices allocated, not written."""
    nnz = int(indptr[-1])
    idx = _index_dtype(cols, nnz)
    return sp.csr_matrix(
        (np.empty(nnz, np.float32), np.empty(nnz, idx), indptr.astype(idx, copy=False)),
        shape=(len(indptr) - 1, cols),
    )


def _hstack(mats: list[sp.csr_matrix], n: int, rows: int = 1 << 16) -> sp.csr_matrix:
    """`sp.hstack(mats, format="csr")` (n rows each, float32), the same arrays, written into
    the result by blocks of `rows` rows (`_hstack_into`): scipy's holds two more copies of
    the result on the way (the inputs concatenated, then a copy of its own output)."""
    indptr = np.zeros(n + 1, dtype=np.int64)
    for m in mats:
        indptr += m.indptr - m.indptr[0]  # row i: the blocks' entries, one after the other
    out = _allocated_csr(indptr, sum(m.shape[1] for m in mats))
    _hstack_into(out, 0, mats, rows)
    return out


def _hstack_into(out: sp.csr_matrix, lo: int, mats: list[sp.csr_matrix], rows: int = 1 << 16):
    """Write `sp.hstack(mats)` (r rows each) into rows lo:lo + r of `out`, whose row pointers
    are already set, by blocks of `rows` rows; the pointers must agree with the mats'."""
    r = mats[0].shape[0] if mats else 0
    a = int(out.indptr[lo])
    ptr = out.indptr[lo : lo + r + 1].astype(np.int64) - a  # (r + 1,) where each row goes
    counts = np.zeros(r, dtype=np.int64)
    for m in mats:
        counts += np.diff(m.indptr)
    if not np.array_equal(np.diff(ptr), counts):
        raise RuntimeError(
            f"rows {lo}:{lo + r} hold other entry counts than the design's row pointers (a bug: "
            "please report it with the feature blocks' shapes)"
        )
    for b in range(0, r, rows):
        e = min(r, b + rows)
        part = sp.hstack([m[b:e] for m in mats], format="csr")
        at, to = a + int(ptr[b]), a + int(ptr[e])
        out.data[at:to], out.indices[at:to] = part.data, part.indices


def _row_nnz(m: sp.csr_matrix) -> np.ndarray:
    return np.diff(m.indptr).astype(np.int64)


def _term_name(term) -> str:
    return term if isinstance(term, str) else f"{term[0]}*{term[1]}"


DESIGN_ROWS = 1 << 18  # rows built at a time: the gathers and crosses are bounded by a chunk


def design_matrices(
    learner_idx,
    course_idx,
    learner_X,
    course_X,
    *,
    crosses: Sequence[tuple[str, str]] = (),
    global_terms: Sequence[Any] = ("learner", "course"),
    coordinates: Mapping[str, Sequence[Any]] | None = None,
    intercept: bool = True,
    prefixes: Mapping[str, str] | None = None,
    chunk_rows: int = DESIGN_ROWS,
) -> dict[str, FeatureBlock]:
    """GLMix designs, one row per event row: {"global": ..., "per_learner": ..., ...}.

    learner_idx, course_idx: (n_rows,) int indices into learner_X / course_X rows.
    learner_X, course_X: `FeatureBlock` (e.g. `encoder.encode(table)`) or any CSR-able
      matrix (names x0, x1, ...; no groups), one row per learner / course.
    Terms: "learner" / "course" (the whole block), "learner.<group>" / "course.<group>"
      (one source column's features, e.g. "course.category"), or a cross, a pair of those,
      e.g. ("learner.industry", "course.category") -> names
      `learner.industry=Tech*course.category=Data Science`. A within-table cross such as
      ("course.category", "course.difficulty") is computed per course, then gathered.
    global = [intercept | global_terms | crosses]. coordinates: {name: terms} for the random
      effects, default per_learner = course features (per-learner coefficients are on course
      features) and per_course = learner features; a later per-segment coordinate can ask
      for ("course",) too. Each design gets a leading `intercept` column when `intercept`.
    prefixes: name prefixes per side, default "learner." / "course.", so that learner and
      course features that share a column name (skills) stay apart. Names must be unique
      within a design.
    Every matrix is CSR float32 (n_rows, n_features), with `groups` = term -> column range.
    chunk_rows: rows built at a time (the same result for any value): the per-event gathers,
      crosses and stacks of a chunk are its temporaries, so the peak is the designs and one
      chunk's work, not about twice the designs.
    """
    lb = _as_block(learner_X, "learner_X")
    cb = _as_block(course_X, "course_X")
    li = _as_index(learner_idx, lb.shape[0], "learner_idx")
    ci = _as_index(course_idx, cb.shape[0], "course_idx")
    if li.shape != ci.shape:
        raise ValueError(
            f"learner_idx and course_idx must have the same length, got {li.shape} and {ci.shape}"
        )
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows: must be >= 1, got {chunk_rows!r}")
    prefixes = {"learner": "learner.", "course": "course.", **(prefixes or {})}
    coordinates = DEFAULT_COORDINATES if coordinates is None else coordinates
    specs = {"global": (*global_terms, *crosses), **{k: tuple(v) for k, v in coordinates.items()}}
    n = len(li)
    shared: dict[tuple, Any] = {}  # entity-level results, computed once for every chunk
    blocks = {"learner": lb, "course": cb}
    empty = np.zeros(0, dtype=np.int64)
    # Each design is allocated once, its row pointers from the entity-level entry counts,
    # then filled chunk by chunk: a chunk's gathers and matrices are the only temporaries.
    out: dict[str, FeatureBlock] = {}
    whole = _Sides(blocks, {"learner": li, "course": ci}, prefixes, shared)
    for design, terms in specs.items():
        no_rows = _Sides(blocks, {"learner": empty, "course": empty}, prefixes, shared)
        _, names, groups = _design_terms(no_rows, design, terms, intercept)  # checks names
        counts = np.full(n, int(intercept), dtype=np.int64)  # (n,) entries of each row
        for term in terms:
            counts += whole.row_counts(term)
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        del counts
        out[design] = FeatureBlock(_allocated_csr(ptr, len(names)), names, groups)
        del ptr
    del whole
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        sides = _Sides(blocks, {"learner": li[lo:hi], "course": ci[lo:hi]}, prefixes, shared)
        for design, terms in specs.items():  # straight into the design's arrays
            _hstack_into(out[design].matrix, lo, _design_terms(sides, design, terms, intercept)[0])
        del sides  # this chunk's gathers
    return out


def _design_terms(
    sides: _Sides, design: str, terms: Sequence[Any], intercept: bool
) -> tuple[list[sp.csr_matrix], tuple[str, ...], dict[str, tuple[int, int]]]:
    """One design's terms for the rows of `sides`: (CSR float32 blocks, names, groups)."""
    n = len(next(iter(sides.index.values())))
    mats: list[sp.csr_matrix] = []
    names: list[str] = []
    groups: dict[str, tuple[int, int]] = {}
    if intercept:
        mats.append(sp.csr_matrix(np.ones((n, 1), dtype=np.float32)))
        names.append(INTERCEPT)
        groups[INTERCEPT] = (0, 1)
    for term in terms:
        m, nm = sides.rows(term)
        groups[_term_name(term)] = (len(names), len(names) + len(nm))
        mats.append(m)
        names += nm
    dup = pd.Index(names)
    if dup.has_duplicates:
        ex = list(dup[dup.duplicated()].unique()[:_N_EXAMPLES])
        raise ValueError(
            f"design {design!r}: {int(dup.duplicated().sum())} duplicate feature name(s), "
            f"e.g. {ex}; a term is repeated, or an encoder has intercept=True while "
            "design_matrices adds one too"
        )
    return mats, tuple(names), groups
