"""GLMix training rows from a split: labelled events of each role, their keys and weights.

Row sets, from a `watchlog.splits.Split` (leakage-checked there):
    train = validation fold inputs   valid = validation fold labels
    test  = test fold labels         refit = test fold inputs (train + valid), for refitting
                                             the model chosen on validation before testing
A row is an event of the chosen kind (`impressions` or `all`) whose label column is present;
events without a label are counted in the report, never dropped silently. The platform's rows
are impressions, label = clicked; MovieLens's loader makes every rating an impression with
clicked = rating > 3 (GDMix's label), so the same rule serves both.

Implicit data (plays, watches, no impressions: nothing was shown and not chosen) has no
negative rows. `negatives="sampled"` builds them as GDMix-style implicit training does: the
role's events that count as watched (all of them without a `watched` column) are the
positives, one row per (learner, course) pair; each learner gets `negative_ratio` times as
many negatives, courses drawn uniformly (seeded) among those it has no event with in the
role's window or before it (the fold's inputs and labels for valid / test, the inputs for
train / refit). Rows a role cannot have raise `NoTrainingRows`, whose message says why and
what to set: the pipeline skips the stage with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evaluation._checks import in_sorted
from glmix.weighting import watch_time_weights
from watchlog.eventlog import EventLog
from watchlog.report import DataReport
from watchlog.splits import Split

__all__ = [
    "RowSet", "DataDoesNotFit", "NoTrainingRows", "require_impressions", "row_sets", "sample_negatives", "sample_weights", "ROW_KINDS",
    "NEGATIVE_KINDS", "ROLES",
]  # fmt: skip

ROLES = ("train", "valid", "test", "refit")
ROW_KINDS = ("impressions", "all")
NEGATIVE_KINDS = ("impressions", "sampled")


class DataDoesNotFit(ValueError):
    """This data cannot train GLMix as configured; the message says why and what to set. A
    pipeline skips the stage with it (`skips_stage`) instead of stopping half-way."""

    skips_stage = True


class NoTrainingRows(DataDoesNotFit):
    """The data cannot give GLMix the rows it is configured for (e.g. no impressions)."""


@dataclass(frozen=True, eq=False)
class RowSet:
    """Rows of one role (train / valid / test / refit): events, 0/1 labels.

    events: rows of `log.events` (learner_id, course_id, learner_idx, course_idx, ...);
    y: (n,) int8 0/1.
    """

    name: str
    events: pd.DataFrame
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.events)

    @property
    def learner_ids(self) -> np.ndarray:
        """(n,) the caller's learner ids (the model's id maps speak them)."""
        return np.asarray(self.events["learner_id"])

    @property
    def course_ids(self) -> np.ndarray:
        return np.asarray(self.events["course_id"])

    @property
    def keys(self) -> dict[str, np.ndarray]:
        """GLMix keys: {"learner": (n,) ids, "course": (n,) ids}."""
        return {"learner": self.learner_ids, "course": self.course_ids}

    @property
    def id_columns(self) -> dict[str, np.ndarray | pd.Categorical]:
        """`keys` as the id columns hold them: a categorical column (the event log's) stays a
        (n,) pd.Categorical (small codes + one object per distinct id), which GLMix, the
        featurizer and `IdMap` look up per category; as an array (`keys`) it would hold a
        Python string per row (~60 bytes: 0.5 GB for 4M rows of both columns). Other
        columns: as `keys`."""
        return {side: _ids(self.events[f"{side}_id"]) for side in ("learner", "course")}

    @property
    def learner_idx(self) -> np.ndarray:
        return self.events["learner_idx"].to_numpy(np.int64)

    @property
    def course_idx(self) -> np.ndarray:
        return self.events["course_idx"].to_numpy(np.int64)


def _ids(column: pd.Series) -> np.ndarray | pd.Categorical:
    return column.array if isinstance(column.dtype, pd.CategoricalDtype) else np.asarray(column)


def _labelled(
    events: pd.DataFrame, name: str, kind: str, label: str, report: DataReport | None
) -> RowSet:
    if label not in events.columns:
        raise KeyError(
            f"rows.label: column {label!r} is not in the events ({list(events.columns)})"
        )
    ev = events if kind == "all" else events[events["impression"].to_numpy()]
    y = ev[label]
    missing = y.isna().to_numpy()
    if missing.any():
        ev, y = ev[~missing], y[~missing]
    values = y.to_numpy(dtype=np.float64)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        ex = ev.index[bad][:5].tolist()
        raise ValueError(
            f"rows.label: column {label!r} must be 0/1 on the {name} rows; {int(bad.sum()):,} "
            f"of {len(values):,} are not (e.g. event rows {ex}, values {values[bad][:5].tolist()})"
        )
    if report is not None:
        report.add_step(
            f"glmix {name} rows",
            "events",
            len(events),
            len(ev),
            not_selected=len(events) - len(ev) - int(missing.sum()),
            no_label=int(missing.sum()),
            positives=int(values.sum()),
        )
    return RowSet(name, ev, values.astype(np.int8))


def row_sets(
    split: Split,
    *,
    events: str = "impressions",
    label: str = "clicked",
    negatives: str = "impressions",
    negative_ratio: float = 4.0,
    seed: int = 0,
    log: EventLog | None = None,
    report: DataReport | None = None,
    roles: Sequence[str] = ROLES,
) -> dict[str, RowSet]:
    """{"train", "valid", "test", "refit"} row sets (see the module docstring). negatives,
    negative_ratio, seed, log: "impressions" takes the labelled events as they are; "sampled"
    draws negatives (needs the `log` the split was made from). roles: build these alone, in
    `ROLES` order, each the same as in the whole set (its own seeded draws)."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"row_sets(roles=...): {unknown} are not among {ROLES}")
    if events not in ROW_KINDS:
        raise ValueError(f"rows.events: must be one of {ROW_KINDS}, got {events!r}")
    if negatives not in NEGATIVE_KINDS:
        raise ValueError(f"rows.negatives: must be one of {NEGATIVE_KINDS}, got {negatives!r}")
    if split.valid is None:
        raise ValueError(
            "GLMix needs a validation fold (coordinate descent keeps the model that is best on "
            f"it); the {split.kind} split has none: set its valid_ratio / valid_days / n_valid"
        )
    folds = {
        "train": split.valid.inputs,
        "valid": split.valid.labels,
        "test": split.test.labels,
        "refit": split.test.inputs,
    }  # in ROLES order
    if negatives == "sampled":
        if log is None:
            raise ValueError("row_sets(negatives='sampled'): needs the event log (log=...)")
        if not negative_ratio > 0:
            raise ValueError(f"rows.negative_ratio: must be > 0, got {negative_ratio!r}")
        seen = {  # what each role may not sample: its window and everything before it
            "train": (split.valid.inputs,),
            "valid": (split.valid.inputs, split.valid.labels),
            "test": (split.test.inputs, split.test.labels),
            "refit": (split.test.inputs,),
        }
        rng = np.random.SeedSequence(seed).spawn(len(folds))  # one per role, whichever are built
        out = {
            name: _sampled(ev, seen[name], name, log, negative_ratio, np.random.default_rng(r),
                           report)
            for (name, ev), r in zip(folds.items(), rng, strict=True) if name in roles
        }  # fmt: skip
    else:
        if events == "impressions":
            require_impressions(split)
        out = {name: _labelled(ev, name, events, label, report) for name, ev in folds.items()
               if name in roles}  # fmt: skip
    for name, rows in out.items():
        if len(rows) == 0 or rows.y.min() == rows.y.max():
            raise NoTrainingRows(
                f"GLMix {name} rows: need both classes, got {len(rows):,} rows with "
                f"{int(rows.y.sum()):,} positives ({_fold_hint(split)}); set glmix.rows "
                "(events / label / negatives=sampled) to rows that hold both, or "
                "stages.glmix=false"
            )
    return out


def _fold_hint(split: Split) -> str:
    return ", ".join(f"{f.name}: {len(f.inputs):,} input and {len(f.labels):,} label events"
                     for f in (split.valid, split.test) if f is not None)  # fmt: skip


def require_impressions(split: Split) -> None:
    """The rows are impressions: say at once when the data has none (implicit data)."""
    parts = (split.test.inputs, split.test.labels)
    n = sum(len(p) for p in parts)
    if n and not any(p["impression"].to_numpy().any() for p in parts):
        raise NoTrainingRows(
            f"GLMix: the data has no impressions (impression is false on all {n:,} "
            "split events), so there are no shown-and-skipped rows to learn clicks from: "
            "implicit data (plays, watches) holds positives only. Fix: "
            "glmix.rows.negatives=sampled (unobserved (learner, course) pairs as negatives, "
            "glmix.rows.negative_ratio per positive, seeded), or glmix.rows.events=all with a 0/1 "
            "glmix.rows.label column, or stages.glmix=false"
        )


def _pair_keys(ev: pd.DataFrame) -> np.ndarray:
    return ev["learner_idx"].to_numpy(np.int64) << 32 | ev["course_idx"].to_numpy(np.int64)


def _sampled(
    events: pd.DataFrame,
    seen: tuple[pd.DataFrame, ...],
    name: str,
    log: EventLog,
    ratio: float,
    rng: np.random.Generator,
    report: DataReport | None,
) -> RowSet:
    """Positive pairs of `events` (watched ones when marked) + sampled negatives."""
    positive = events["watched"].to_numpy() if "watched" in events.columns else None
    pos_ev = events if positive is None else events[positive]
    keys, inverse = np.unique(_pair_keys(pos_ev), return_inverse=True)
    watch = np.bincount(inverse, weights=pos_ev["watch_seconds"].fillna(0).to_numpy(np.float64),
                        minlength=len(keys))  # fmt: skip
    pl, pc = keys >> 32, keys & 0xFFFFFFFF
    excluded = np.unique(np.concatenate([_pair_keys(f) for f in seen]))
    nl, nc = sample_negatives(pl, excluded, log.n_courses, ratio, rng)
    li = np.concatenate([pl, nl]).astype(np.int32)
    ci = np.concatenate([pc, nc]).astype(np.int32)
    y = np.r_[np.ones(len(pl), np.int8), np.zeros(len(nl), np.int8)]
    rows = pd.DataFrame(
        {
            "learner_id": log.learner_ids.index[li],
            "course_id": log.course_ids.index[ci],
            "learner_idx": li,
            "course_idx": ci,
            "watch_seconds": np.r_[watch, np.zeros(len(nl))].astype(np.float32),
            "clicked": y,  # the weighting reads a positive as a click that led to watching
            "impression": np.zeros(len(y), dtype=bool),
        }
    )
    if report is not None:
        report.add_step(
            f"glmix {name} rows", "events", len(events), len(rows),
            not_watched=0 if positive is None else int((~positive).sum()),
            positive_pairs=len(pl), sampled_negatives=len(nl), negative_ratio=ratio,
        )  # fmt: skip
    return RowSet(name, rows, y)


def sample_negatives(
    learners: np.ndarray,
    excluded: np.ndarray,
    n_courses: int,
    ratio: float,
    rng: np.random.Generator,
    max_rounds: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """(learner_idx, course_idx) of sampled negatives: for each positive row's learner in
    `learners`, `ratio` distinct courses drawn uniformly among those whose pair key
    (learner << 32 | course) is not in the sorted `excluded`; fewer when the catalogue runs
    out. Vectorized rejection rounds; learners still short after them draw from their exact
    list of allowed courses."""
    ids, n_pos = np.unique(np.asarray(learners, np.int64), return_counts=True)
    excl_learner = excluded >> 32
    n_excl = np.searchsorted(excl_learner, ids, "right") - np.searchsorted(excl_learner, ids)
    quota = np.minimum(np.ceil(ratio * n_pos).astype(np.int64), n_courses - n_excl)
    taken = np.empty(0, np.int64)
    need = quota.copy()
    for _ in range(max_rounds):
        if not need.any():
            break
        draw_n = np.where(need > 0, 2 * need + 4, 0)
        cand_l = np.repeat(ids, draw_n)
        cand = cand_l << 32 | rng.integers(0, n_courses, cand_l.size)
        cand = cand[~in_sorted(excluded, cand) & ~in_sorted(np.sort(taken), cand)]
        _, first = np.unique(cand, return_index=True)  # drop repeats, keep the draw's order
        cand = cand[np.sort(first)]
        taken = np.r_[taken, _first_per_learner(cand, ids, need)]
        need = quota - _counts(taken, ids)
    if need.any():  # learners whose allowed courses are nearly all used: enumerate them
        short = ids[need > 0]
        cand = (np.repeat(short, n_courses) << 32) | np.tile(np.arange(n_courses), short.size)
        cand = cand[~in_sorted(excluded, cand) & ~in_sorted(np.sort(taken), cand)]
        cand = cand[rng.permutation(cand.size)]
        cand = cand[np.argsort(cand >> 32, kind="stable")]
        taken = np.r_[taken, _first_per_learner(cand, ids, need)]
    taken = np.sort(taken)
    return taken >> 32, taken & 0xFFFFFFFF


def _counts(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    learner = np.sort(keys >> 32)
    return np.searchsorted(learner, ids, "right") - np.searchsorted(learner, ids)


def _first_per_learner(cand: np.ndarray, ids: np.ndarray, need: np.ndarray) -> np.ndarray:
    """The first `need[i]` candidates of learner ids[i], in the candidates' order."""
    learner = cand >> 32
    order = np.argsort(learner, kind="stable")
    cand, learner = cand[order], learner[order]
    starts = np.searchsorted(learner, learner, "left")
    rank = np.arange(cand.size) - starts
    return cand[rank < need[np.searchsorted(ids, learner)]]


def sample_weights(
    rows: RowSet,
    kind: str | None = "none",
    *,
    courses: pd.DataFrame | None = None,
    **params: Any,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Watch-time weights of `rows` ((n,) float32, or None when kind is none / None) and
    their counts. params: `glmix.watch_time_weights` keywords (scale, cap,
    min_watch_seconds); kind="fraction" also needs `courses`, the event log's course table
    (row i = course index i) with a duration_seconds column."""
    if kind in (None, "none"):
        return None, {"kind": "none"}
    duration = None
    if kind == "fraction":
        if courses is None or "duration_seconds" not in courses.columns:
            raise ValueError(
                "sample_weights(kind='fraction'): needs courses, the log's course table with a "
                "duration_seconds column"
            )
        duration = courses["duration_seconds"].to_numpy(np.float64)[rows.course_idx]
    res = watch_time_weights(
        rows.events["clicked"], rows.events["watch_seconds"], duration, kind=kind, **params
    )
    return res.weights, {"kind": kind, **res.counts}
