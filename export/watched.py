"""Already-watched (learner, course) pairs, as the `not_watched` gate takes them: on the
publish's dense indices (rows: the learner table, columns: the catalogue), CSR with sorted
column indices per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from export.rows import COURSE, LEARNER, RowError, _is_string, id_kind
from export.view import IdLookup, as_index

__all__ = ["WatchedOnTables", "WatchedPairs", "watched_matrix"]

_N_EXAMPLES = 5


@dataclass(frozen=True)
class WatchedPairs:
    """Already-watched (learner, course) pairs as a learner x course matrix (CSR; any nonzero
    is a watched pair) with the ids of its rows and columns (watchlog IdMaps, Index, arrays)."""

    matrix: Any
    learner_ids: Any
    course_ids: Any


@dataclass(frozen=True)
class WatchedOnTables:
    """The watched pairs the `not_watched` gate checks, and what became of the pairs given."""

    matrix: sp.csr_matrix  # (learners, courses) bool, sorted unique columns per row
    given: int  # pairs given (a repeated pair counts each time)
    unknown_learner: int  # left out: learner outside the learner table
    unknown_course: int  # left out: course outside the catalogue (a pair may be both)

    def counts(self) -> dict[str, int]:
        """The gate's counts; `watched_pairs_checked`: pairs on the tables, repeats once."""
        return {
            "watched_pairs_given": self.given,
            "pairs_unknown_learner": self.unknown_learner,
            "pairs_unknown_course": self.unknown_course,
            "watched_pairs_checked": int(self.matrix.nnz),
        }


def watched_matrix(watched: Any, learners: IdLookup, courses: IdLookup) -> WatchedOnTables:
    """Watched pairs on the publish's dense indices (rows: learner table, columns: catalogue).

    A pair with a learner or course outside those sets cannot be in a passing list: it is left
    out of the matrix but counted (`WatchedOnTables`, reported by the `not_watched` gate). Ids
    of another kind than the tables' (integers vs strings) raise `RowError`, as in the rows;
    pairs given of which none is on the tables raise ValueError at once (wrong id maps, most
    likely: the gate would otherwise pass having checked nothing)."""
    shape = (len(learners), len(courses))
    if isinstance(watched, WatchedPairs):
        row_ids = as_index(watched.learner_ids, "watched.learner_ids")
        col_ids = as_index(watched.course_ids, "watched.course_ids")
        _check_kind("watched.learner_ids", id_kind(row_ids, "watched.learner_ids"), learners,
                    row_ids[:_N_EXAMPLES].tolist())  # fmt: skip
        _check_kind("watched.course_ids", id_kind(col_ids, "watched.course_ids"), courses,
                    col_ids[:_N_EXAMPLES].tolist())  # fmt: skip
        if watched.matrix.shape != (len(row_ids), len(col_ids)):
            raise ValueError(
                f"watched.matrix: shape {watched.matrix.shape} does not match its ids "
                f"({len(row_ids):,} learners x {len(col_ids):,} courses)"
            )
        if row_ids.equals(learners.index) and col_ids.equals(courses.index):
            # already on the publish's indices (the usual case: the same id maps): no remap,
            # and no pair can be outside the tables
            given = int(watched.matrix.nnz)
            if _canonical_bool_csr(watched.matrix):  # read only here: no second copy of it
                return WatchedOnTables(watched.matrix, given, 0, 0)
            matrix = sp.csr_matrix(watched.matrix, dtype=bool, copy=True)
            matrix.eliminate_zeros()
            matrix.sum_duplicates()
            return WatchedOnTables(matrix, int(matrix.nnz), 0, 0)
        coo = sp.coo_matrix(watched.matrix)
        keep = coo.data != 0
        rows = learners.lookup(pa.array(row_ids))[coo.row[keep]]
        cols = courses.lookup(pa.array(col_ids))[coo.col[keep]]
    elif hasattr(watched, "columns") and {LEARNER, COURSE} <= set(watched.columns):
        table = pa.Table.from_pandas(watched[[LEARNER, COURSE]], preserve_index=False)
        columns = {}
        for name, lookup in ((LEARNER, learners), (COURSE, courses)):
            col = table.column(name).combine_chunks()
            what = f"watched.{name}"
            if pa.types.is_integer(col.type):
                kind = "int"
            elif _is_string(col.type):
                kind = "str"
                col = col.cast(pa.string())  # dictionary (categorical) / large strings
            else:
                raise RowError(f"{what}: ids must be integers or strings, got {col.type}")
            _check_kind(what, kind, lookup, col.slice(0, _N_EXAMPLES).to_pylist())
            if col.null_count:
                raise RowError(
                    f"{what}: ids must not be missing; {col.null_count:,} of {len(col):,} "
                    "watched pairs lack one"
                )
            columns[name] = col
        rows = learners.lookup(columns[LEARNER])
        cols = courses.lookup(columns[COURSE])
    else:
        raise ValueError(
            "watched: expected WatchedPairs(matrix, learner_ids, course_ids) or a table with "
            f"{LEARNER} and {COURSE} columns, got {type(watched).__name__}"
        )
    unknown_learner, unknown_course = rows < 0, cols < 0
    ok = ~(unknown_learner | unknown_course)
    if len(rows) and not ok.any():
        raise ValueError(
            f"watched: none of the {len(rows):,} watched pairs is on the learner table and the "
            f"catalogue ({int(unknown_learner.sum()):,} with a learner outside the learner "
            f"table, {int(unknown_course.sum()):,} with a course outside the catalogue); the "
            "not_watched gate would check nothing. Are these the same id maps?"
        )
    matrix = sp.csr_matrix((np.ones(int(ok.sum()), dtype=bool), (rows[ok], cols[ok])), shape=shape)
    matrix.sum_duplicates()  # also sorts each row's columns: export.checks relies on it
    return WatchedOnTables(matrix, len(rows), int(unknown_learner.sum()), int(unknown_course.sum()))


def _check_kind(what: str, kind: str, lookup: IdLookup, examples: list) -> None:
    """Integer ids never equal string ids: a mismatch would drop every pair unnoticed."""
    if kind != lookup.kind:
        plural = {"int": "integers", "str": "strings"}
        table = "learner table" if lookup.name == "learners" else lookup.name
        raise RowError(
            f"{what}: ids are {plural[kind]} (e.g. {examples}) but the {table}'s ids are "
            f"{plural[lookup.kind]}; give both in the same kind"
        )


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
