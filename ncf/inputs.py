"""What the two towers see at one cutoff, built from `watchlog` folds.

A `Snapshot` is everything known at a cutoff, as CSR float32 matrices:

    history      (n_learners, n_courses)  learner tower input: courses watched (past the
                                          watch-time threshold) in the lookback window,
                                          weighted (binary | log watch time | recency | a column)
    seen         (n_learners, n_courses)  every course watched before the cutoff (binary),
                                          what `filter_already_watched` removes
    course_bags  (n_courses, n_courses)   course tower input: each course's co-watch row
                                          (top-k neighbours) from the same window
    labels       (n_learners, n_courses)  positives: courses watched in [cutoff, label_end),
                                          weight 1 or a watch-time weight; None at inference

`InputBuilder.snapshot(log, fold)` makes one from a `watchlog.splits.Fold`: temporal folds
use the lookback window; random/stratified folds (published setups only) use all of the
fold's inputs. `split_history` makes the denoising split used to train on random splits:
each epoch a random part of every learner's courses becomes labels, the rest input.

Weights are validated when built: NaN, infinite or negative weights raise with the column,
the count and examples. Vectorized throughout (pandas group-by on pair keys, CSR arithmetic).

Serving a trained model from another log (`NCFRecommender.at`): `Reindex` maps the log's dense
indices onto the model's (courses the model does not know are dropped before the co-watch
bags are built, so they never take a neighbour slot); `InputBuilder.config` is what a saved
recommender stores to rebuild its snapshots.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from watchlog import EventLog
from watchlog.cowatch import cowatch_similarity
from watchlog.eventlog import ts_ns, utc_ns
from watchlog.idmap import IdMap
from watchlog.report import DataReport
from watchlog.splits import Fold

__all__ = [
    "WEIGHTINGS",
    "NORMALIZATIONS",
    "Snapshot",
    "InputBuilder",
    "Reindex",
    "history_matrix",
    "course_bags",
    "normalize_rows",
    "pattern",
    "split_history",
]

WEIGHTINGS = ("binary", "log_watch", "recency", "column")
NORMALIZATIONS = ("mean", "sqrt", "none")
_DAY_NS = 86_400 * 10**9
_N_EXAMPLES = 5
# A watched pair is an input (or a label) whatever its weight: a weight of 0 would make it
# vanish from sparse matrices, so every weighting has a positive floor. log_watch: one second
# of watching (a 0-second watch passes a 0-second threshold); recency and column: the
# smallest normal float32 (a pair older than ~126 half-lives underflows to 0 in float32).
_MIN_WATCH_SECONDS = 1.0
_MIN_PAIR_WEIGHT = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """What is known at one cutoff (shapes in the module doc); all CSR float32."""

    name: str
    history: sp.csr_matrix
    seen: sp.csr_matrix
    course_bags: sp.csr_matrix
    labels: sp.csr_matrix | None = None
    cutoff: pd.Timestamp | None = None

    @property
    def n_learners(self) -> int:
        return self.history.shape[0]

    @property
    def n_courses(self) -> int:
        return self.history.shape[1]

    def label_learners(self) -> np.ndarray:
        """(n,) int64 learners with at least one label, ascending."""
        if self.labels is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.diff(self.labels.indptr) > 0).astype(np.int64)

    def describe(self) -> dict[str, int]:
        rows = np.diff(self.history.indptr)
        out = {
            "history_pairs": int(self.history.nnz),
            "learners_with_history": int((rows > 0).sum()),
            "course_bag_pairs": int(self.course_bags.nnz),
            "courses_without_cowatch": int((np.diff(self.course_bags.indptr) == 0).sum()),
        }
        if self.labels is not None:
            out["label_pairs"] = int(self.labels.nnz)
            out["label_learners"] = int(len(self.label_learners()))
        return out


# ---- weights ----------------------------------------------------------------------------------
def _reject_bad(values: np.ndarray, what: str, frame: pd.DataFrame) -> None:
    """NaN, infinite or negative weights are an input error: name them, count them, show some."""
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        rows = frame.index[bad][:_N_EXAMPLES].tolist()
        examples = values[bad][:_N_EXAMPLES].tolist()
        raise ValueError(
            f"{what}: input weights must be finite and >= 0; {int(bad.sum()):,} of {len(values):,} "
            f"watched events are not (e.g. event rows {rows} with values {examples})"
        )


def history_matrix(
    events: pd.DataFrame,
    shape: tuple[int, int],
    *,
    weighting: str = "binary",
    weight_column: str | None = None,
    half_life_days: float = 30.0,
    reference_time=None,
) -> sp.csr_matrix:
    """Learner x course CSR float32 of pair weights from watch events (one entry per pair).

    binary     1 per watched pair
    log_watch  log1p(total watch minutes of the pair), at least that of one second
    recency    0.5 ** (age of the pair's latest watch / half_life_days), age from reference_time,
               at least the smallest normal float32
    column     max of `weight_column` over the pair's events (e.g. a rating), at least the
               smallest normal float32

    Every pair of `events` gets a positive weight (the floors), so none of them vanishes
    from the sparse matrix: the events are watches.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "column" and weight_column is None:
        raise ValueError("weighting='column' needs weight_column (the events column to use)")
    if weighting == "recency" and not half_life_days > 0:
        raise ValueError(f"half_life_days: must be > 0, got {half_life_days}")
    n_learners, n_courses = shape
    learner = events["learner_idx"].to_numpy(np.int64)
    course = events["course_idx"].to_numpy(np.int64)
    key = learner * n_courses + course  # (n_events,) one int64 per (learner, course) pair
    if weighting == "binary":
        per_event = np.ones(len(events))
    elif weighting == "log_watch":
        per_event = events["watch_seconds"].to_numpy(np.float64)
        _reject_bad(per_event, "watch_seconds (weighting=log_watch)", events)
    elif weighting == "recency":
        per_event = ts_ns(events["ts"]).astype(np.float64)
    else:
        if weight_column not in events.columns:
            raise ValueError(
                f"weight_column: {weight_column!r} is not an events column; have {list(events.columns)}"
            )
        per_event = pd.to_numeric(events[weight_column], errors="coerce").to_numpy(np.float64)
        _reject_bad(per_event, f"weight column {weight_column!r}", events)
    agg = "sum" if weighting == "log_watch" else "max"
    pair = pd.Series(per_event).groupby(key, sort=True).agg(agg)  # hash group-by, sorted keys
    keys, value = pair.index.to_numpy(np.int64), pair.to_numpy(np.float64)
    if weighting == "log_watch":
        value = np.log1p(np.maximum(value, _MIN_WATCH_SECONDS) / 60.0)
    elif weighting == "recency":
        ref = utc_ns(reference_time) if reference_time is not None else value.max(initial=0)
        value = 0.5 ** (np.maximum(ref - value, 0) / (half_life_days * _DAY_NS))
    if weighting in ("recency", "column"):
        value = np.maximum(value, _MIN_PAIR_WEIGHT)
    out = sp.csr_matrix(
        (value.astype(np.float32), (keys // n_courses, keys % n_courses)),
        shape=shape,
        dtype=np.float32,
    )
    out.sum_duplicates()  # keys are unique: this only sorts indices
    return out


def normalize_rows(m: sp.csr_matrix, mode: str = "mean") -> sp.csr_matrix:
    """Rows scaled for a sum-pooling bag: mean (sum to 1), sqrt (/ sqrt(nnz)) or none."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize: must be one of {NORMALIZATIONS}, got {mode!r}")
    if mode == "none":
        return m
    if mode == "mean":
        denom = np.asarray(m.sum(axis=1)).ravel()
    else:
        denom = np.sqrt(np.diff(m.indptr).astype(np.float64))
    scale = np.divide(1.0, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)
    out = m.copy()
    out.data = (out.data * np.repeat(scale, np.diff(m.indptr))).astype(np.float32)
    return out


def course_bags(
    watched: sp.csr_matrix,
    *,
    measure: str = "cosine",
    top_k: int | None = 50,
    self_weight: float = 0.0,
) -> sp.csr_matrix:
    """Course x course co-watch rows (`watchlog.cowatch`), optionally with `self_weight` on the
    diagonal so a course nobody co-watched still has a non-empty input."""
    sim = cowatch_similarity(watched, measure, top_k=top_k)
    if self_weight:
        sim = (
            sim + sp.identity(sim.shape[0], dtype=np.float32, format="csr") * self_weight
        ).tocsr()
    return sim.astype(np.float32)


def split_history(
    history: sp.csr_matrix, label_fraction: float, rng: np.random.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Denoising split: each stored entry becomes a label with probability `label_fraction`.

    Returns (inputs, labels), disjoint, both (n_learners, n_courses) CSR with the original
    weights. One uniform draw per entry: vectorized, no loop per learner.
    """
    if not 0 < label_fraction < 1:
        raise ValueError(f"label_fraction: must be in (0, 1), got {label_fraction}")
    is_label = rng.random(history.nnz) < label_fraction  # (nnz,)
    return _keep(history, ~is_label), _keep(history, is_label)


def _keep(m: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    counts = np.bincount(rows[mask], minlength=m.shape[0])
    indptr = np.zeros(m.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return sp.csr_matrix((m.data[mask], m.indices[mask], indptr), shape=m.shape)


# ---- index maps between logs -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Reindex:
    """One dense index space onto another: old index i becomes `target[i]`, or is dropped (-1).

    target: (n_old,) int64, injective on its kept entries; size: the new space's length.
    Applied to CSR rows or columns by remapping the stored coordinates (no loop per row);
    entries whose index is dropped are removed.
    """

    target: np.ndarray
    size: int

    @classmethod
    def between(cls, source: IdMap, target: IdMap) -> Reindex:
        """`source`'s indices onto `target`'s by caller id (ids `target` lacks are dropped)."""
        return cls(target.to_index(source.index, strict=False).astype(np.int64), len(target))

    @property
    def is_identity(self) -> bool:
        n = len(self.target)
        return n == self.size and bool((self.target == np.arange(n)).all())

    @property
    def dropped(self) -> np.ndarray:
        """(k,) int64 old indices with no new index."""
        return np.flatnonzero(self.target < 0)

    def rows(self, m: sp.csr_matrix) -> sp.csr_matrix:
        return _reindex(m, self, None)

    def columns(self, m: sp.csr_matrix) -> sp.csr_matrix:
        return _reindex(m, None, self)


def _reindex(m: sp.csr_matrix, rows: Reindex | None, cols: Reindex | None) -> sp.csr_matrix:
    for what, r, n in (("rows", rows, m.shape[0]), ("columns", cols, m.shape[1])):
        if r is not None and len(r.target) != n:
            raise ValueError(f"Reindex of {what}: maps {len(r.target):,} indices, matrix has {n:,}")
    if (rows is None or rows.is_identity) and (cols is None or cols.is_identity):
        return m
    m = sp.csr_matrix(m)
    r = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))  # (nnz,) row of entry
    c = m.indices.astype(np.int64)  # (nnz,)
    if rows is not None:
        r = rows.target[r]
    if cols is not None:
        c = cols.target[c]
    keep = (r >= 0) & (c >= 0)
    shape = (
        m.shape[0] if rows is None else rows.size,
        m.shape[1] if cols is None else cols.size,
    )
    out = sp.csr_matrix((m.data[keep], (r[keep], c[keep])), shape=shape, dtype=m.dtype)
    out.sort_indices()  # the maps are injective: no duplicates to sum, only an order to restore
    return out


# ---- snapshots from folds ---------------------------------------------------------------------
class InputBuilder:
    """Builds `Snapshot`s from folds with one set of input rules (explicit arguments, no config).

    lookback_days: learner history and co-watch window before the cutoff (None: all inputs).
    weighting / weight_column / half_life_days: the learner bag weights (`history_matrix`).
    cowatch_measure / cowatch_top_k / self_weight: the course bags (`course_bags`).
    label_weighting: "none" (1 per positive) or "log_watch" (log1p watch minutes, at least
      that of one second, so a watched label never gets weight 0).
    exclude_seen_from_labels: positives already watched before the cutoff are not labels
      (they would be filtered at recommendation time anyway); the count goes to the report.
    """

    def __init__(
        self,
        lookback_days: float | None = None,
        weighting: str = "binary",
        weight_column: str | None = None,
        half_life_days: float = 30.0,
        cowatch_measure: str = "cosine",
        cowatch_top_k: int | None = 50,
        self_weight: float = 0.0,
        label_weighting: str = "none",
        exclude_seen_from_labels: bool = True,
    ):
        if lookback_days is not None and not _positive_days(lookback_days):
            raise ValueError(
                f"lookback_days (ncf.inputs.lookback_days): must be null (all inputs) or a number "
                f"of days > 0, got {lookback_days!r}"
            )
        self.lookback_days = lookback_days
        self.weighting = weighting
        self.weight_column = weight_column
        self.half_life_days = half_life_days
        self.cowatch_measure = cowatch_measure
        self.cowatch_top_k = cowatch_top_k
        self.self_weight = self_weight
        self.label_weighting = label_weighting
        self.exclude_seen_from_labels = exclude_seen_from_labels

    @property
    def config(self) -> dict:
        """The constructor arguments, JSON-able: `InputBuilder(**b.config)` rebuilds `b`."""
        return {
            "lookback_days": self.lookback_days,
            "weighting": self.weighting,
            "weight_column": self.weight_column,
            "half_life_days": self.half_life_days,
            "cowatch_measure": self.cowatch_measure,
            "cowatch_top_k": self.cowatch_top_k,
            "self_weight": self.self_weight,
            "label_weighting": self.label_weighting,
            "exclude_seen_from_labels": self.exclude_seen_from_labels,
        }

    def __repr__(self) -> str:
        return "InputBuilder(" + ", ".join(f"{k}={v!r}" for k, v in self.config.items()) + ")"

    def _history(self, events: pd.DataFrame, shape, reference_time) -> sp.csr_matrix:
        return history_matrix(
            events,
            shape,
            weighting=self.weighting,
            weight_column=self.weight_column,
            half_life_days=self.half_life_days,
            reference_time=reference_time,
        )

    def snapshot(
        self,
        log: EventLog,
        fold: Fold,
        *,
        name: str | None = None,
        report: DataReport | None = None,
        learners: Reindex | None = None,
        courses: Reindex | None = None,
    ) -> Snapshot:
        """The snapshot at `fold`'s cutoff (labels from `fold.labels`).

        learners / courses: map the log's indices onto another index space (a trained model's);
        courses are remapped before the co-watch bags are built, learners after (so every
        learner's watches count for co-watch, even one the target space drops)."""
        if self.label_weighting not in ("none", "log_watch"):
            raise ValueError(
                f"label_weighting: must be 'none' or 'log_watch', got {self.label_weighting!r}"
            )
        name = name or fold.name
        shape = (log.n_learners, log.n_courses)
        temporal = fold.kind == "temporal"
        window = fold.lookback(self.lookback_days if temporal else None)
        watched_window = _watched(window)
        reference = fold.cutoff if temporal else None
        history = self._history(watched_window, shape, reference)
        seen = log.interactions(_watched(fold.inputs))
        seen.data[:] = 1.0
        if courses is not None:
            history, seen = courses.columns(history), courses.columns(seen)
        bags = course_bags(
            pattern(history),  # who watched what in the window, whatever the weights
            measure=self.cowatch_measure,
            top_k=self.cowatch_top_k,
            self_weight=self.self_weight,
        )
        if learners is not None:
            history, seen = learners.rows(history), learners.rows(seen)
        label_events = _watched(fold.labels)
        labels = history_matrix(
            label_events,
            shape,
            weighting="log_watch" if self.label_weighting == "log_watch" else "binary",
        )
        labels = _reindex(labels, learners, courses)
        if self.exclude_seen_from_labels and labels.nnz:
            n_labels = int(labels.nnz)  # counted before anything is removed
            already = pattern(labels).multiply(seen).astype(bool)
            labels = (labels - labels.multiply(already)).tocsr()
            labels.eliminate_zeros()
            if report is not None:
                report.add_step(
                    f"ncf labels {name}: drop courses already watched before the cutoff",
                    "label pairs",
                    before=n_labels,
                    after=int(labels.nnz),
                )
        if not temporal and self.lookback_days is not None and report is not None:
            report.note(
                f"ncf inputs {name}: lookback_days ignored on a {fold.kind} fold (no cutoff)"
            )
        snap = Snapshot(name, history, seen, bags, labels.astype(np.float32), fold.cutoff)
        if report is not None:
            report.add_split(f"ncf {name}", **snap.describe())
        return snap

    def inference_snapshot(
        self,
        log: EventLog,
        cutoff=None,
        *,
        name: str = "serve",
        learners: Reindex | None = None,
        courses: Reindex | None = None,
    ) -> Snapshot:
        """Inputs from every watch before `cutoff` (a timestamp, naive = UTC; default: the
        whole log), no labels; `learners` / `courses` as in `snapshot`. The snapshot's
        cutoff is UTC, so a recommender can compare it with others. An empty log is an error
        (there is nothing to serve from, nor a last event to default the cutoff to)."""
        if len(log.events) == 0:
            raise ValueError(
                f"inference_snapshot: the event log has no events ({log.n_learners:,} learners, "
                f"{log.n_courses:,} courses), so there are no histories to serve from; give the "
                "log of watches up to the serving time"
            )
        if cutoff is not None:
            from ncf.serving import as_cutoff  # here: ncf.serving imports this module

            cutoff = as_cutoff(cutoff)
        events = log.events if cutoff is None else log.time_window(end=cutoff)
        end = cutoff if cutoff is not None else events["ts"].iloc[-1] + pd.Timedelta(seconds=1)
        fold = Fold(name, "temporal", events, events.iloc[:0], end, end)
        snap = self.snapshot(log, fold, name=name, learners=learners, courses=courses)
        return Snapshot(name, snap.history, snap.seen, snap.course_bags, None, cutoff)


def _positive_days(x) -> bool:
    """A finite number > 0 (not a bool, a string or NaN)."""
    return (
        isinstance(x, numbers.Real) and not isinstance(x, bool) and bool(np.isfinite(x)) and x > 0
    )


def pattern(m: sp.csr_matrix) -> sp.csr_matrix:
    """1 at every stored entry of `m` (float32), whatever its value (an entry stored with
    weight 0 is still an entry: bags pass it to the towers)."""
    out = sp.csr_matrix(m, dtype=np.float32, copy=True)
    out.data[:] = 1.0
    return out


def _watched(events: pd.DataFrame) -> pd.DataFrame:
    if "watched" not in events.columns:
        raise ValueError(
            "events: no `watched` column; run watchlog.cleaning.clean (or mark_watched) first"
        )
    return events[events["watched"].to_numpy()]
