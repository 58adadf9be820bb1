"""Already-watched (learner, course) pairs, as the `not_watched` gate takes them: on the
publish's dense indices (rows: the learner table, columns: the catalogue), CSR with sorted
column indices per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from export.rows import COURSE, LEARNER
from export.view import IdLookup, as_index

__all__ = ["WatchedPairs", "watched_matrix"]


@dataclass(frozen=True)
class WatchedPairs:
    """Already-watched (learner, course) pairs as a learner x course matrix (CSR; any nonzero
    is a watched pair) with the ids of its rows and columns (watchlog IdMaps, Index, arrays)."""

    matrix: Any
    learner_ids: Any
    course_ids: Any


def watched_matrix(watched: Any, learners: IdLookup, courses: IdLookup) -> sp.csr_matrix:
    """Watched pairs on the publish's dense indices (rows: learner table, columns: catalogue);
    pairs with an id outside those sets cannot be in a passing list and are dropped."""
    shape = (len(learners), len(courses))
    if isinstance(watched, WatchedPairs):
        row_ids = as_index(watched.learner_ids, "watched.learner_ids")
        col_ids = as_index(watched.course_ids, "watched.course_ids")
        if watched.matrix.shape != (len(row_ids), len(col_ids)):
            raise ValueError(
                f"watched.matrix: shape {watched.matrix.shape} does not match its ids "
                f"({len(row_ids):,} learners x {len(col_ids):,} courses)"
            )
        if row_ids.equals(learners.index) and col_ids.equals(courses.index):
            # already on the publish's indices (the usual case: the same id maps): no remap
            if _canonical_bool_csr(watched.matrix):
                return watched.matrix  # read only here: no second copy of a large input
            matrix = sp.csr_matrix(watched.matrix, dtype=bool, copy=True)
            matrix.eliminate_zeros()
            matrix.sum_duplicates()
            return matrix
        coo = sp.coo_matrix(watched.matrix)
        keep = coo.data != 0
        rows = learners.lookup(pa.array(row_ids))[coo.row[keep]]
        cols = courses.lookup(pa.array(col_ids))[coo.col[keep]]
    elif hasattr(watched, "columns") and {LEARNER, COURSE} <= set(watched.columns):
        table = pa.Table.from_pandas(watched[[LEARNER, COURSE]], preserve_index=False)
        if learners.kind == "str":
            table = table.cast(pa.schema([(LEARNER, pa.string()), (COURSE, table.schema[1].type)]))
        if courses.kind == "str":
            table = table.cast(pa.schema([(LEARNER, table.schema[0].type), (COURSE, pa.string())]))
        rows = learners.lookup(table.column(LEARNER).combine_chunks())
        cols = courses.lookup(table.column(COURSE).combine_chunks())
    else:
        raise ValueError(
            "watched: expected WatchedPairs(matrix, learner_ids, course_ids) or a table with "
            f"{LEARNER} and {COURSE} columns, got {type(watched).__name__}"
        )
    ok = (rows >= 0) & (cols >= 0)
    matrix = sp.csr_matrix((np.ones(int(ok.sum()), dtype=bool), (rows[ok], cols[ok])), shape=shape)
    matrix.sum_duplicates()  # also sorts each row's columns: export.checks relies on it
    return matrix


def _canonical_bool_csr(matrix: Any) -> bool:
    """A boolean CSR with sorted, unique columns per row and no stored False: what the gate
    reads, as is."""
    return (
        sp.issparse(matrix)
        and matrix.format == "csr"
        and matrix.dtype == bool
        and matrix.has_canonical_format
        and bool(matrix.data.all())
    )
