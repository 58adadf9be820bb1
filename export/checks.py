"""The nine quality gates, one class each: `update(view)` per chunk, `result()` at the end
(the table of rules is in `export.gates`). Everything is vectorized over a chunk; state is a
few arrays sized by the learner table or the catalogue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from export.rows import COURSE, LEARNER, RANK, SCORE
from export.view import ChunkView, IdLookup, Vocabulary
from export.watched import WatchedOnTables

__all__ = ["GateResult", "make_checks"]

_UNKNOWN_CAP = 100_000  # distinct unknown course ids remembered for the exact count


@dataclass
class GateResult:
    """One gate's outcome: `passed` is None when the gate was skipped (and `rule` says why)."""

    name: str
    rule: str
    passed: bool | None
    counts: dict[str, Any] = field(default_factory=dict)
    examples: list = field(default_factory=list)
    value: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        status = {True: "passed", False: "FAILED", None: "skipped"}[self.passed]
        measured = "" if self.value is None else f"; value {self.value:.4g} vs {self.threshold}"
        counts = ", ".join(
            f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in self.counts.items()
        )
        examples = f"; e.g. {self.examples}" if self.examples and self.passed is False else ""
        return f"{self.name} [{status}]: {self.rule}{measured}; {counts}{examples}"


class _Gate:
    def __init__(self, n_examples: int):
        self.n_examples = n_examples
        self.violations = 0  # rows/learners certainly breaking the rule so far
        self.examples: list = []

    def _want(self) -> int:
        return self.n_examples - len(self.examples)

    def update(self, view: ChunkView) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def result(self) -> GateResult:  # pragma: no cover - interface
        raise NotImplementedError


class _LearnersKnown(_Gate):
    def __init__(self, n_examples: int):
        super().__init__(n_examples)
        self.rows = 0

    def update(self, view: ChunkView) -> None:
        bad = np.flatnonzero(view.learner < 0)
        if len(bad):
            self.violations += len(bad)
            self.rows += int(view.lengths[bad].sum())
            if self._want() > 0:
                self.examples += view.run_ids(bad[: self._want()])

    def result(self) -> GateResult:
        return GateResult(
            "learners_known",
            f"every {LEARNER} is in the learner table",
            self.violations == 0,
            {"unknown_learners": self.violations, "rows": self.rows},
            self.examples,
        )


class _CoursesKnown(_Gate):
    def __init__(self, n_examples: int):
        super().__init__(n_examples)
        self.unknown: set = set()

    def update(self, view: ChunkView) -> None:
        bad = np.flatnonzero(view.course < 0)
        if len(bad):
            self.violations += len(bad)
            if len(self.unknown) < _UNKNOWN_CAP:
                ids = view.table.column(COURSE).take(pa.array(bad)).unique().to_pylist()
                self.unknown.update(ids[: _UNKNOWN_CAP - len(self.unknown)])
            if self._want() > 0:
                self.examples += view.row_values(bad[: self._want()], LEARNER, COURSE)

    def result(self) -> GateResult:
        distinct = len(self.unknown)
        return GateResult(
            "courses_known",
            f"every {COURSE} is in the catalogue",
            self.violations == 0,
            {
                "rows": self.violations,
                "unknown_courses": distinct if distinct < _UNKNOWN_CAP else f">={distinct}",
            },
            self.examples,
        )


class _CompleteLists(_Gate):
    def __init__(self, n_examples: int, k: int, eligible: np.ndarray, learners: IdLookup):
        super().__init__(n_examples)
        self.k, self.eligible, self.learners = k, eligible, learners
        self.rows = np.zeros(len(eligible), dtype=np.int32)

    def update(self, view: ChunkView) -> None:
        known = view.learner >= 0
        dense, lengths = view.learner[known], view.lengths[known]
        self.rows[dense] = lengths  # one run per learner (contiguity is checked in the view)
        wrong = self.eligible[dense] & (lengths != self.k)
        self.violations += int(wrong.sum())

    def result(self) -> GateResult:
        rows, k = self.rows[self.eligible], self.k
        missing, short, long = rows == 0, (rows > 0) & (rows < k), rows > k
        bad = np.flatnonzero(self.eligible)[missing | short | long][: self.n_examples]
        examples = [
            {"learner_id": i, "rows": int(r)}
            for i, r in zip(self.learners.ids(bad), self.rows[bad], strict=True)
        ]
        has_rows = self.rows > 0
        return GateResult(
            "complete_lists",
            f"every eligible learner has exactly K={k} rows",
            not (missing.any() or short.any() or long.any()),
            {
                "eligible_learners": int(self.eligible.sum()),
                "complete": int((rows == k).sum()),
                "missing": int(missing.sum()),
                "short": int(short.sum()),
                "long": int(long.sum()),
                "not_eligible_with_rows": int((has_rows & ~self.eligible).sum()),
            },
            examples,
        )


def _pairs(view: ChunkView, n_courses: int, watched: sp.csr_matrix | None):
    """(repeated keys, watched keys found) of the chunk, computed once and shared by the
    `unique_pairs` and `not_watched` gates; a key is learner run x n_courses + course.

    One sort serves both: the rows' keys (tag 0) and the chunk's learners' watched keys
    (tag 1, unique) are sorted together as 2 * key + tag, so a repeated row key shows as two
    equal neighbours and a watched course in a list as a 2k, 2k + 1 pair."""
    cached = getattr(view, "_pairs", None)
    if cached is not None:
        return cached
    known = view.course >= 0
    dtype = np.uint32 if 2 * (view.n_runs + 1) * n_courses < 2**32 else np.uint64
    run = np.repeat(np.arange(view.n_runs, dtype=dtype), view.lengths)
    keys = run * dtype(2 * n_courses) + 2 * view.course.astype(dtype)
    if not known.all():
        keys = keys[known]
    if watched is not None:
        runs = np.flatnonzero(view.learner >= 0)
        sub = watched[view.learner[runs]]  # the chunk's learners' watched courses
        wrun = np.repeat(runs.astype(dtype), np.diff(sub.indptr))
        keys = np.concatenate(
            [keys, wrun * dtype(2 * n_courses) + 2 * sub.indices.astype(dtype) + 1]
        )
    keys.sort()
    same = keys[1:] == keys[:-1]  # tag-0 duplicates (watched keys are unique per learner)
    found = (keys[1:] == keys[:-1] + 1) & (keys[1:] & 1 == 1)
    view._pairs = (keys[1:][same] // 2, keys[1:][found] // 2)
    return view._pairs


def _split_key(view: ChunkView, courses: IdLookup, keys: np.ndarray) -> list[tuple]:
    n = len(courses)
    runs, cols = (keys // n).astype(np.int64), (keys % n).astype(np.int64)
    return list(zip(view.run_ids(runs), courses.ids(cols), strict=True))


class _UniquePairs(_Gate):
    def __init__(self, n_examples: int, courses: IdLookup, watched: sp.csr_matrix | None):
        super().__init__(n_examples)
        self.courses, self.watched = courses, watched

    def update(self, view: ChunkView) -> None:
        repeated, _ = _pairs(view, len(self.courses), self.watched)
        if len(repeated):
            self.violations += len(repeated)
            if self._want() > 0:
                first = np.unique(repeated)[: self._want()]
                self.examples += _split_key(view, self.courses, first)

    def result(self) -> GateResult:
        return GateResult(
            "unique_pairs",
            f"a ({LEARNER}, {COURSE}) pair appears once",
            self.violations == 0,
            {"repeated_rows": self.violations},
            self.examples,
        )


class _NotWatched(_Gate):
    def __init__(self, n_examples: int, courses: IdLookup, watched: WatchedOnTables | None):
        super().__init__(n_examples)
        self.courses, self.watched = courses, watched

    def update(self, view: ChunkView) -> None:
        if self.watched is None:
            return
        _, found = _pairs(view, len(self.courses), self.watched.matrix)
        if len(found):
            self.violations += len(found)
            if self._want() > 0:
                self.examples += _split_key(view, self.courses, found[: self._want()])

    def result(self) -> GateResult:
        if self.watched is None:
            return GateResult(
                "not_watched",
                "no already-watched course (skipped: no watched pairs were given)",
                None,
            )
        return GateResult(
            "not_watched",
            "no course the learner already watched",
            self.violations == 0,
            # pairs outside the tables were left out of the check: counted, never silently
            {"watched_rows": self.violations, **self.watched.counts()},
            self.examples,
        )


class _Ranks(_Gate):
    def __init__(self, n_examples: int, k: int):
        super().__init__(n_examples)
        self.k = k

    def update(self, view: ChunkView) -> None:
        rank = view.rank
        expected = np.empty_like(rank)
        expected[0] = 1
        np.add(rank[:-1], 1, out=expected[1:])
        expected[view.is_start] = 1
        bad = np.flatnonzero((rank != expected) | (rank > self.k))
        if len(bad):
            self.violations += len(bad)
            if self._want() > 0:
                self.examples += view.row_values(bad[: self._want()], LEARNER, RANK, COURSE)

    def result(self) -> GateResult:
        return GateResult(
            "ranks",
            f"each learner's ranks are 1, 2, ... in row order, at most K={self.k}",
            self.violations == 0,
            {"rows": self.violations},
            self.examples,
        )


class _Scores(_Gate):
    def __init__(self, n_examples: int):
        super().__init__(n_examples)
        self.not_finite = 0
        self.increasing = 0

    def update(self, view: ChunkView) -> None:
        score = view.score
        not_finite = ~np.isfinite(score)
        rising = np.zeros(len(score), dtype=bool)
        np.greater(score[1:], score[:-1], out=rising[1:])
        rising &= ~view.is_start
        n_nf, n_up = int(not_finite.sum()), int(rising.sum())
        if n_nf or n_up:
            self.not_finite += n_nf
            self.increasing += n_up
            self.violations += n_nf + n_up
            if self._want() > 0:
                bad = np.flatnonzero(not_finite | rising)[: self._want()]
                self.examples += view.row_values(bad, LEARNER, RANK, SCORE)

    def result(self) -> GateResult:
        return GateResult(
            "scores",
            "scores are finite and non-increasing by rank",
            self.violations == 0,
            {"not_finite_rows": self.not_finite, "increasing_rows": self.increasing},
            self.examples,
        )


class _Coverage(_Gate):
    def __init__(self, n_examples: int, courses: IdLookup, threshold: float):
        super().__init__(n_examples)
        self.courses, self.threshold = courses, threshold
        self.covered = np.zeros(len(courses), dtype=bool)

    def update(self, view: ChunkView) -> None:
        course = view.course
        if course.min() < 0:
            course = course[course >= 0]
        self.covered |= np.bincount(course, minlength=len(self.covered)) > 0  # > fancy set

    def result(self) -> GateResult:
        covered = int(self.covered.sum())
        share = covered / len(self.covered)
        passed = share >= self.threshold
        missing = np.flatnonzero(~self.covered)[: self.n_examples]
        return GateResult(
            "coverage",
            f"share of catalogue courses in some list >= {self.threshold}",
            passed,
            {"covered_courses": covered, "catalogue_courses": len(self.covered)},
            [] if passed else self.courses.ids(missing),
            value=share,
            threshold=self.threshold,
        )


class _FallbackShare(_Gate):
    def __init__(
        self, n_examples: int, sources: Vocabulary, fallback: Sequence[str], threshold: float
    ):
        super().__init__(n_examples)
        self.sources, self.fallback, self.threshold = sources, set(fallback), threshold
        self.learners = 0
        self.fallback_learners = 0

    def update(self, view: ChunkView) -> None:
        personal = np.array([s not in self.fallback for s in self.sources.labels], dtype=bool)
        has_personal = view.source.learners_with(personal, view.starts)
        self.learners += view.n_runs
        self.fallback_learners += int(view.n_runs - has_personal.sum())
        if self._want() > 0:  # a share can only fail at the end: keep the first few anyway
            self.examples += view.run_ids(np.flatnonzero(~has_personal)[: self._want()])

    def result(self) -> GateResult:
        share = self.fallback_learners / self.learners if self.learners else 0.0
        return GateResult(
            "fallback_share",
            f"share of learners whose rows all come from a fallback source "
            f"{sorted(self.fallback)} <= {self.threshold}",
            share <= self.threshold,
            {"fallback_learners": self.fallback_learners, "learners": self.learners},
            [] if share <= self.threshold else self.examples,
            value=share,
            threshold=self.threshold,
        )


def make_checks(
    *,
    n_examples: int,
    k: int,
    eligible: np.ndarray,
    learners: IdLookup,
    courses: IdLookup,
    watched: WatchedOnTables | None,
    sources: Vocabulary,
    min_coverage: float,
    fallback_sources: Sequence[str],
    max_fallback_share: float,
) -> list[_Gate]:
    """Every gate, in the order the manifest lists them."""
    return [
        _LearnersKnown(n_examples),
        _CoursesKnown(n_examples),
        _CompleteLists(n_examples, k, eligible, learners),
        _UniquePairs(n_examples, courses, None if watched is None else watched.matrix),
        _NotWatched(n_examples, courses, watched),
        _Ranks(n_examples, k),
        _Scores(n_examples),
        _Coverage(n_examples, courses, min_coverage),
        _FallbackShare(n_examples, sources, fallback_sources, max_fallback_share),
    ]
