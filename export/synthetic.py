"""Synthetic ranked lists that pass every gate, chunk by chunk (tests and benchmarks).

Learner i gets the courses offset_i, offset_i + 1, ... offset_i + k - 1 (mod the catalogue),
scores strictly decreasing by rank, source "blend" or, for about `fallback_share` of the
learners, "popular_global". Its watched courses are the next `watched_per_learner` courses
after its list, so the `not_watched` gate has pairs to check and none to find. Each chunk has
its own generator, so any chunk can be made alone and the stream is the same however it is
consumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from export.gates import WatchedPairs
from export.rows import export_schema

__all__ = ["SyntheticLists"]


def _learner_labels(labels: np.ndarray, k: int) -> pa.Array:
    """A string column holding each learner's label on its k rows, built from buffers (a
    cheap producer: the benchmark times the export, not the generator)."""
    n = len(labels) * k
    distinct = np.unique(labels)
    if len(distinct) == 1:
        text = str(distinct[0]).encode()
        offsets = np.arange(0, (n + 1) * len(text), len(text), dtype=np.int32)
        data = text * n
    else:
        blocks = {s: s.encode() * k for s in distinct.tolist()}
        data = b"".join([blocks[s] for s in labels.tolist()])
        sizes = np.array([len(blocks[s]) // k for s in distinct.tolist()], dtype=np.int32)
        lengths = np.repeat(sizes[np.searchsorted(distinct, labels)], k)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


@dataclass
class SyntheticLists:
    n_learners: int
    k: int = 10
    n_courses: int = 1_000
    chunk_learners: int = 1_000
    seed: int = 0
    fallback_share: float = 0.2
    watched_per_learner: int = 0
    model_version: str = "synthetic-v1"
    string_ids: bool = False
    offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.k + self.watched_per_learner > self.n_courses:
            raise ValueError("k + watched_per_learner must not exceed n_courses")
        rng = np.random.default_rng(self.seed)
        self.offsets = rng.integers(0, self.n_courses, self.n_learners)

    @property
    def learner_ids(self) -> np.ndarray | pd.Index:
        ids = np.arange(self.n_learners, dtype=np.int64)
        return pd.Index([f"L{i:07d}" for i in ids], dtype="str") if self.string_ids else ids

    @property
    def course_ids(self) -> np.ndarray | pd.Index:
        ids = np.arange(self.n_courses, dtype=np.int64) * 10 + 7  # not 0..n-1: a real map
        return pd.Index([f"C{i:07d}" for i in ids], dtype="str") if self.string_ids else ids

    @property
    def n_rows(self) -> int:
        return self.n_learners * self.k

    @property
    def schema(self) -> pa.Schema:
        kind = "str" if self.string_ids else "int"
        return export_schema(kind, kind)

    def chunk(self, i: int, learner_ids=None, course_ids=None) -> pa.Table:
        lo = i * self.chunk_learners
        hi = min(lo + self.chunk_learners, self.n_learners)
        n, k = hi - lo, self.k
        rng = np.random.default_rng([self.seed, i])
        course = self.offsets[lo:hi, None] + np.arange(k)
        course[course >= self.n_courses] -= self.n_courses  # wrap around the catalogue
        score = rng.random(n)[:, None] + np.arange(k, 0, -1) / k  # strictly decreasing
        fallback = rng.random(n) < self.fallback_share
        fixed = self._fixed(n)
        learner = fixed["learner"] + lo
        if self.string_ids:
            learner_col = pa.array(learner_ids, pa.string()).take(pa.array(learner))
            course_col = pa.array(course_ids, pa.string()).take(pa.array(course.ravel()))
        else:
            learner_col = pa.array(learner, pa.int64())
            course_col = pa.array(course.ravel() * 10 + 7, pa.int64())
        return pa.Table.from_arrays(
            [
                learner_col,
                fixed["rank"],
                course_col,
                pa.array(score.ravel()),
                _learner_labels(np.where(fallback, "popular_global", "blend"), k),
                fixed["model_version"],
            ],
            schema=self.schema,
        )

    def _fixed(self, n: int) -> dict:
        """What every chunk of n learners shares (ranks, model_version, learner offsets): made
        once, so the producer costs the benchmark little."""
        cache = self.__dict__.setdefault("_cache", {})
        if n not in cache:
            cache[n] = {
                "learner": np.repeat(np.arange(n, dtype=np.int64), self.k),
                "rank": pa.array(np.tile(np.arange(1, self.k + 1, dtype=np.int32), n)),
                "model_version": _learner_labels(np.full(n, self.model_version), self.k),
            }
        return cache[n]

    def chunks(self) -> Iterator[pa.Table]:
        learner_ids = self.learner_ids if self.string_ids else None
        course_ids = self.course_ids if self.string_ids else None
        n_chunks = -(-self.n_learners // self.chunk_learners)
        for i in range(n_chunks):
            yield self.chunk(i, learner_ids, course_ids)

    def frame(self) -> pd.DataFrame:
        """The whole list as one DataFrame (small sizes: tests)."""
        return pa.concat_tables(self.chunks()).to_pandas()

    def watched(self) -> WatchedPairs:
        """Watched pairs as a learner x course CSR with its id arrays (none in the lists),
        built directly in CSR form (sorted columns per row) to keep the input small."""
        w = self.watched_per_learner
        cols = self.offsets[:, None] + self.k + np.arange(w)
        cols %= self.n_courses
        cols.sort(axis=1)
        matrix = sp.csr_matrix(
            (
                np.ones(cols.size, dtype=bool),
                cols.ravel().astype(np.int32),
                np.arange(0, cols.size + 1, w, dtype=np.int32 if cols.size < 2**31 else np.int64),
            ),
            shape=(self.n_learners, self.n_courses),
        )
        return WatchedPairs(matrix, self.learner_ids, self.course_ids)
