"""GLMix training rows from a split: labelled events of each role, their keys and weights.

Row sets, from a `watchlog.splits.Split` (leakage-checked there):
    train = validation fold inputs   valid = validation fold labels
    test  = test fold labels         refit = test fold inputs (train + valid), for refitting
                                             the model chosen on validation before testing
A row is an event of the chosen kind (`impressions` or `all`) whose label column is present;
events without a label are counted in the report, never dropped silently. The platform's rows
are impressions, label = clicked; MovieLens's loader makes every rating an impression with
clicked = rating > 3 (GDMix's label), so the same rule serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from glmix.weighting import watch_time_weights
from watchlog.report import DataReport
from watchlog.splits import Split

__all__ = ["RowSet", "row_sets", "sample_weights", "ROW_KINDS"]

ROW_KINDS = ("impressions", "all")


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
    def learner_idx(self) -> np.ndarray:
        return self.events["learner_idx"].to_numpy(np.int64)

    @property
    def course_idx(self) -> np.ndarray:
        return self.events["course_idx"].to_numpy(np.int64)


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
    report: DataReport | None = None,
) -> dict[str, RowSet]:
    """{"train", "valid", "test", "refit"} row sets (see the module docstring)."""
    if events not in ROW_KINDS:
        raise ValueError(f"rows.events: must be one of {ROW_KINDS}, got {events!r}")
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
    }
    out = {name: _labelled(ev, name, events, label, report) for name, ev in folds.items()}
    for name, rows in out.items():
        if len(rows) == 0 or rows.y.min() == rows.y.max():
            raise ValueError(
                f"GLMix {name} rows: need both classes, got {len(rows):,} rows with "
                f"{int(rows.y.sum()):,} positives"
            )
    return out


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
