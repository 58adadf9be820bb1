"""Quality gates, computed chunk by chunk over dense indices, before anything is published.

| gate | rule |
| --- | --- |
| `learners_known` | every learner_id is in the learner table |
| `courses_known` | every course_id is in the catalogue |
| `complete_lists` | every eligible learner has exactly K rows (a learner outside the eligible set may have fewer; it is counted) |
| `unique_pairs` | a (learner_id, course_id) pair appears once |
| `not_watched` | no course the learner already watched (skipped, and said so, without watched pairs) |
| `ranks` | each learner's ranks are 1, 2, ... in row order, at most K |
| `scores` | scores are finite and non-increasing by rank |
| `coverage` | share of catalogue courses in some list >= `min_coverage` |
| `fallback_share` | share of learners whose rows all come from a fallback source <= `max_fallback_share` |

State is a few arrays sized by the learner table and the catalogue (a row counter per learner,
a coverage bitset per course); per chunk the work is vectorized: one sort of (learner run,
course) keys serves the duplicate and the watched checks. No Python loop per row or learner.
The gates themselves are in `export.checks`; watched pairs are prepared by `export.watched`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from export.checks import GateResult, make_checks
from export.view import ChunkView, IdLookup, Vocabulary, as_index
from export.watched import WatchedPairs, watched_matrix

__all__ = ["GateConfig", "GateResult", "GateError", "WatchedPairs", "Gates"]


def _integer(name: str, value: Any, *, least: int) -> int:
    """`value` as an int >= `least`: an integer, or a float with an integral value (3.0)."""
    ok = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and float(value).is_integer()
    )
    if isinstance(value, bool) or not ok or int(value) < least:
        raise ValueError(f"GateConfig.{name}: must be an integer >= {least}, got {value!r}")
    return int(value)


def _share(name: str, value: Any) -> float:
    """`value` as a float in [0, 1] (a number, not a string or a bool)."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not 0.0 <= float(value) <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"GateConfig.{name}: must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class GateConfig:
    """Gate thresholds (the manifest records them with the results).

    k: list length every eligible learner must have; ranks run 1..k.
    min_coverage: least share of catalogue courses that must appear in some list.
    max_fallback_share: largest share of learners whose rows all come from `fallback_sources`.
    n_examples: examples kept per failed gate (>= 0).

    Checked at construction: k an integer >= 1 and n_examples >= 0 (stored as int; 3.0 is
    taken, 3.7 and "3" are not), the shares numbers in [0, 1] (stored as float)."""

    k: int
    min_coverage: float = 0.0
    max_fallback_share: float = 1.0
    fallback_sources: Sequence[str] = ("popular_segment", "popular_global")
    n_examples: int = 5

    def __post_init__(self) -> None:
        # Checked and converted here, at construction: a string or a fractional k used to
        # fail deep inside numpy (or pass), and a string share only after the whole stream
        # had been loaded into the sink.
        object.__setattr__(self, "k", _integer("k", self.k, least=1))
        for name in ("min_coverage", "max_fallback_share"):
            object.__setattr__(self, name, _share(name, getattr(self, name)))
        object.__setattr__(self, "n_examples", _integer("n_examples", self.n_examples, least=0))
        if isinstance(self.fallback_sources, str):
            raise ValueError("GateConfig.fallback_sources: a list of source names, not a string")
        object.__setattr__(self, "fallback_sources", tuple(str(s) for s in self.fallback_sources))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fallback_sources"] = list(self.fallback_sources)
        return out


class GateError(RuntimeError):
    """Quality gate(s) failed: nothing was published. `failed` holds the failed results,
    `manifest` the whole would-be manifest (every gate's result, counts)."""

    def __init__(self, failed: list[GateResult], manifest: dict[str, Any]):
        self.failed, self.manifest = failed, manifest
        lines = "\n".join(f"  - {r.describe()}" for r in failed)
        names = ", ".join(r.name for r in failed)
        super().__init__(f"quality gate(s) failed: {names}; nothing was published.\n{lines}")


class Gates:
    """Every gate over a stream of chunks: `view(table)` -> `update(view)` per chunk, then
    `results()`. `failing` turns true as soon as a violation is certain, so the caller can stop
    writing early while still counting to the end."""

    def __init__(
        self,
        config: GateConfig,
        *,
        learners: Any,
        catalogue: Any,
        eligible_learners: Any = None,
        watched: Any = None,
    ):
        self.config = config
        self.learners = IdLookup(learners, "learners")
        self.courses = IdLookup(catalogue, "catalogue")
        for name, lookup in (("learners", self.learners), ("catalogue", self.courses)):
            if len(lookup) == 0:
                raise ValueError(f"{name}: the id set is empty")
        self.eligible = np.ones(len(self.learners), dtype=bool)
        if eligible_learners is not None:
            eligible = as_index(eligible_learners, "eligible_learners")
            pos = self.learners.index.get_indexer(eligible)
            if (pos < 0).any():
                outside = eligible[pos < 0]
                raise ValueError(
                    f"eligible_learners: {len(outside):,} of {len(eligible):,} ids are not in "
                    f"the learner table (e.g. {outside[: config.n_examples].tolist()})"
                )
            self.eligible[:] = False
            self.eligible[pos] = True
        self.watched = (  # WatchedOnTables: the matrix and the counts of what was left out
            None if watched is None else watched_matrix(watched, self.learners, self.courses)
        )
        self.sources, self.versions = Vocabulary(), Vocabulary()
        self.seen = np.zeros(len(self.learners), dtype=bool)
        self._gates = make_checks(
            n_examples=config.n_examples,
            k=config.k,
            eligible=self.eligible,
            learners=self.learners,
            courses=self.courses,
            watched=self.watched,
            sources=self.sources,
            min_coverage=config.min_coverage,
            fallback_sources=config.fallback_sources,
            max_fallback_share=config.max_fallback_share,
        )

    @property
    def learner_kind(self) -> str:
        return self.learners.kind

    @property
    def course_kind(self) -> str:
        return self.courses.kind

    def view(self, table: pa.Table) -> ChunkView:
        return ChunkView.build(
            table, self.learners, self.courses, self.sources, self.versions, self.seen
        )

    def update(self, view: ChunkView) -> None:
        for gate in self._gates:
            gate.update(view)

    @property
    def failing(self) -> bool:
        return any(g.violations for g in self._gates)

    def results(self) -> list[GateResult]:
        return [g.result() for g in self._gates]
