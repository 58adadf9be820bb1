"""Dense indices for the caller's ids, and one chunk seen as runs of learners.

Every gate works on dense int32 indices (bitsets and counters sized by the learner table or
the catalogue), so ids are mapped once per chunk here and the gates never hash an id again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from export.checksum import run_starts
from export.rows import COURSE, LEARNER, MODEL_VERSION, RANK, SCORE, SOURCE, RowError, id_kind

__all__ = ["IdLookup", "Vocabulary", "LabelRuns", "ChunkView", "as_index", "label_codes"]

_N_EXAMPLES = 5


def as_index(ids: Any, name: str) -> pd.Index:
    """A set of caller ids (list, array, Series, Index, Arrow array or a watchlog IdMap;
    categorical ones as their values) as a pandas Index of unique ids of an integer or string
    dtype."""
    if type(ids).__name__ == "IdMap":  # watchlog.idmap.IdMap (not imported: see export.rows)
        ids = ids.index
    if isinstance(ids, pa.ChunkedArray | pa.Array):
        ids = ids.to_pandas()
    series = pd.Series(ids)
    missing = series.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)
        raise RowError(
            f"{name}: ids must not be missing; {len(rows):,} of {len(series):,} are (e.g. "
            f"positions {rows[:_N_EXAMPLES].tolist()})"
        )
    if isinstance(series.dtype, pd.CategoricalDtype):
        # the values in their categories' dtype, as the rows' categorical columns are taken
        series = series.astype(series.dtype.categories.dtype)
    index = pd.Index(pd.unique(series))
    if id_kind(index, name) == "str" and pd.api.types.is_object_dtype(index.dtype):
        index = index.astype("str")
    return index


class IdLookup:
    """Caller ids -> dense int32 positions in a fixed id set (-1: not in the set).

    Integer ids in a compact range use a direct table (a gather, no hashing); anything else a
    pandas hash index. String rows are dictionary-encoded by Arrow first, so each distinct id of
    a chunk is hashed once."""

    def __init__(self, ids: Any, name: str):
        self.index = as_index(ids, name)
        self.name = name
        self.kind = id_kind(self.index, name)
        self._table = None
        if self.kind == "int" and len(self.index):
            values = self.index.to_numpy(dtype=np.int64)
            lo, hi = int(values.min()), int(values.max())
            if hi - lo < max(4 * len(values), 1 << 20):
                self._lo = lo
                self._table = np.full(hi - lo + 1, -1, dtype=np.int32)
                self._table[values - lo] = np.arange(len(values), dtype=np.int32)

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, values: pa.Array) -> np.ndarray:
        """Dense positions of `values` (an Arrow array of this lookup's kind)."""
        if self.kind == "int":
            v = values.to_numpy(zero_copy_only=False)
            if self._table is None:
                return self.index.get_indexer(v).astype(np.int32)
            if len(v) == 0:
                return np.zeros(0, dtype=np.int32)
            pos = v - self._lo
            if pos.min() >= 0 and pos.max() < len(self._table):  # the usual case: one gather
                return self._table[pos]
            inside = (pos >= 0) & (pos < len(self._table))
            out = self._table[np.where(inside, pos, 0)]
            out[~inside] = -1
            return out
        encoded = pc.dictionary_encode(values)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        found = self.index.get_indexer(pd.Index(encoded.dictionary.to_pandas()))
        return found.astype(np.int32)[encoded.indices.to_numpy(zero_copy_only=False)]

    def ids(self, positions: np.ndarray) -> list:
        """Caller ids at dense `positions`, as plain Python values (for messages)."""
        return self.index.take(np.asarray(positions, dtype=np.int64)).tolist()


def label_codes(values: pa.Array) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(run starts, a code per run, distinct labels) of a string column of few values.

    Labels such as `source` and `model_version` come in long runs (a learner's list, a whole
    chunk), so only the first row of each run is dictionary-encoded: one vectorized
    comparison instead of hashing every row."""
    if len(values) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32), []
    starts = run_starts(values)
    encoded = pc.dictionary_encode(values.take(pa.array(starts)))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    return starts, codes, encoded.dictionary.to_pylist()


@dataclass
class LabelRuns:
    """A label column of one chunk as runs: run i covers rows starts[i] .. starts[i+1] - 1
    (the last one to n) and holds label `codes[i]` of its vocabulary."""

    starts: np.ndarray
    codes: np.ndarray
    n: int

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(np.r_[self.starts, self.n])

    def rows_per_code(self, n_codes: int) -> np.ndarray:
        return np.bincount(self.codes, weights=self.lengths, minlength=n_codes).astype(np.int64)

    def learners_with(self, wanted: np.ndarray, learner_starts: np.ndarray) -> np.ndarray:
        """Per learner run: has it a row whose code is in `wanted` (bool per code)?"""
        runs = np.flatnonzero(wanted[self.codes])
        n_learners = len(learner_starts)
        if len(runs) == len(self.codes):
            return np.ones(n_learners, dtype=bool)
        if not len(runs):
            return np.zeros(n_learners, dtype=bool)
        ends = np.r_[self.starts[1:], self.n][runs] - 1
        first = np.searchsorted(learner_starts, self.starts[runs], side="right") - 1
        last = np.searchsorted(learner_starts, ends, side="right") - 1
        # +1 over learners first..last of every such run, as a difference array
        cover = np.bincount(first, minlength=n_learners + 1) - np.bincount(
            last + 1, minlength=n_learners + 1
        )
        return np.cumsum(cover[:n_learners]) > 0


class Vocabulary:
    """Small string labels (source, model_version) -> stable codes across chunks."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def encode(self, values: pa.Array) -> LabelRuns:
        starts, local, labels = label_codes(values)
        table = np.array([self.codes.setdefault(s, len(self.codes)) for s in labels], np.int32)
        return LabelRuns(starts, table[local] if len(labels) else local, len(values))

    @property
    def labels(self) -> list[str]:
        return list(self.codes)


@dataclass
class ChunkView:
    """One chunk as runs of learners, with dense indices (what every gate reads)."""

    table: pa.Table
    starts: np.ndarray  # (n_runs,) first row of each learner's run
    lengths: np.ndarray  # (n_runs,) rows per learner
    is_start: np.ndarray  # (n,) bool
    learner: np.ndarray  # (n_runs,) dense learner index, -1 if not in the learner table
    course: np.ndarray  # (n,) dense course index, -1 if not in the catalogue
    rank: np.ndarray  # (n,) int32
    score: np.ndarray  # (n,) float64
    source: LabelRuns  # codes in the publish's source vocabulary
    model_version: LabelRuns

    @property
    def n_rows(self) -> int:
        return len(self.rank)

    @property
    def n_runs(self) -> int:
        return len(self.starts)

    @property
    def runs(self) -> dict[str, np.ndarray]:
        """Run starts of the run-structured columns (the checksum hashes them as runs)."""
        return {
            LEARNER: self.starts,
            SOURCE: self.source.starts,
            MODEL_VERSION: self.model_version.starts,
        }

    def run_ids(self, runs: np.ndarray) -> list:
        """Caller learner ids of the given runs (for messages)."""
        return self.table.column(LEARNER).take(self.starts[runs]).to_pylist()

    def row_values(self, rows: np.ndarray, *columns: str) -> list[tuple]:
        """Plain-Python tuples of `columns` at `rows` (for messages)."""
        taken = self.table.select(list(columns)).take(np.asarray(rows, dtype=np.int64))
        return list(zip(*(taken.column(c).to_pylist() for c in columns), strict=True))

    @classmethod
    def build(
        cls,
        table: pa.Table,
        learners: IdLookup,
        courses: IdLookup,
        sources: Vocabulary,
        versions: Vocabulary,
        seen: np.ndarray,
    ) -> ChunkView:
        """The view of `table`; `seen` marks learners of earlier chunks (updated here), so a
        learner split across chunks, or whose rows are not contiguous, raises `RowError`."""
        n = table.num_rows
        ids = table.column(LEARNER).chunk(0)  # as_table combined the chunks: one per column
        starts = run_starts(ids).astype(np.int64)
        lengths = np.diff(np.r_[starts, n])
        is_start = np.zeros(n, dtype=bool)
        is_start[starts] = True
        run_ids = ids.take(pa.array(starts))
        learner = learners.lookup(run_ids)
        cls._check_contiguous(run_ids, learner, seen)
        return cls(
            table=table,
            starts=starts,
            lengths=lengths,
            is_start=is_start,
            learner=learner,
            course=courses.lookup(table.column(COURSE).chunk(0)),
            rank=table.column(RANK).chunk(0).to_numpy(),
            score=table.column(SCORE).chunk(0).to_numpy(zero_copy_only=False),
            source=sources.encode(table.column(SOURCE).chunk(0)),
            model_version=versions.encode(table.column(MODEL_VERSION).chunk(0)),
        )

    @staticmethod
    def _check_contiguous(run_ids: pa.Array, learner: np.ndarray, seen: np.ndarray) -> None:
        repeated = pd.Index(run_ids.to_pandas()).duplicated()
        known = learner >= 0
        earlier = np.zeros(len(learner), dtype=bool)
        earlier[known] = seen[learner[known]]
        bad = repeated | earlier
        if bad.any():
            where = "in an earlier chunk too" if earlier.any() else "in two runs of one chunk"
            examples = pd.unique(run_ids.filter(pa.array(bad)).to_pandas())[:_N_EXAMPLES]
            raise RowError(
                f"chunk.{LEARNER}: a learner's rows must be contiguous and in one chunk; "
                f"{int(bad.sum()):,} run(s) repeat a learner ({where}; e.g. {examples.tolist()})"
            )
        seen[learner[known]] = True
