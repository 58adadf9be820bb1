"""GLMix inputs from a split: training rows, labels, sample weights and per-row designs.

Row sets, from a `watchlog.splits.Split` (leakage-checked there):
    train = validation fold inputs   valid = validation fold labels
    test  = test fold labels         refit = test fold inputs (train + valid), for refitting
                                             the model chosen on validation before testing
A row is an event of the chosen kind (`impressions` or `all`) whose label column is present;
events without a label are counted in the report, never dropped silently. The platform's rows
are impressions, label = clicked; MovieLens's loader makes every rating an impression with
clicked = rating > 3 (GDMix's label), so the same rule serves both.

Features come only from the learner and course tables (`FeatureEncoder`, fitted on the whole
entity tables: they hold no labels), optionally with low-rank factors of the *training* label
matrix (`watchlog.collaborative.label_factors`), then `watchlog.design.design_matrices` gathers
one design per coordinate. Nothing here looks at a validation or test label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from watchlog import DataReport, EventLog, FeatureBlock, FeatureEncoder, design_matrices
from watchlog.collaborative import concat_blocks, label_factors, scaled_numeric
from watchlog.splits import Split

__all__ = [
    "RowSet",
    "EntityFeatures",
    "row_sets",
    "encode_entities",
    "with_label_factors",
    "row_designs",
]

_ROW_KINDS = ("impressions", "all")


@dataclass(frozen=True, eq=False)
class RowSet:
    """Rows of one role (train / valid / test / refit): events, 0/1 labels, entity indices."""

    name: str
    events: pd.DataFrame
    y: np.ndarray  # (n,) int8 0/1

    def __len__(self) -> int:
        return len(self.events)

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
    if events not in _ROW_KINDS:
        raise ValueError(f"rows.events: must be one of {_ROW_KINDS}, got {events!r}")
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


@dataclass(frozen=True, eq=False)
class EntityFeatures:
    """Entity-level feature blocks (row i = learner / course index i) and their encoders."""

    learner: FeatureBlock
    course: FeatureBlock
    encoders: dict[str, dict[str, Any]]  # side -> FeatureEncoder.to_dict() (+ scaled columns)


def _encode_side(
    table: pd.DataFrame, spec: Mapping[str, Any], side: str, report: DataReport | None
) -> tuple[FeatureBlock, dict[str, Any]]:
    spec = dict(spec)
    scaled = dict(spec.pop("scaled", None) or {})
    blocks = []
    state: dict[str, Any] = {}
    if any(spec.get(k) for k in ("categorical", "multi_hot", "numeric")):
        enc = FeatureEncoder(**spec).fit(table, report=report)
        blocks.append(enc.encode(table, report=report))
        state["encoder"] = enc.to_dict()
    if scaled:
        blocks.append(scaled_numeric(table, scaled, report=report))
        state["scaled"] = scaled
    if not blocks:
        raise ValueError(f"features.{side}: no columns to encode")
    return concat_blocks(blocks), state


def encode_entities(
    log: EventLog,
    learner: Mapping[str, Any],
    course: Mapping[str, Any],
    report: DataReport | None = None,
) -> EntityFeatures:
    """Encode the learner and course tables. Each spec holds `FeatureEncoder` arguments
    (categorical, multi_hot, numeric, min_frequency, missing_indicator, separator) and an
    optional `scaled: {column: factor}` for raw numeric values times a fixed factor (GDMix
    scales age by 1/100 and release year by 1/2000 instead of standardizing)."""
    lb, ls = _encode_side(log.learners, learner, "learner", report)
    cb, cs = _encode_side(log.courses, course, "course", report)
    return EntityFeatures(lb, cb, {"learner": ls, "course": cs})


def with_label_factors(
    features: EntityFeatures, rows: RowSet, *, rank: int, seed: int = 0, scale: float = 1.0
) -> EntityFeatures:
    """Add group `factors` to both sides: low-rank factors of `rows`' label matrix (the
    training rows only; learner factors to the learner block, course factors to the course
    block), so a coordinate can ask for e.g. "course.factors" (per-learner model on movie
    factors)."""
    n_l, n_c = features.learner.shape[0], features.course.shape[0]
    lf, cf = label_factors(
        rows.learner_idx, rows.course_idx, rows.y, (n_l, n_c), rank=rank, seed=seed, scale=scale
    )
    return EntityFeatures(
        concat_blocks([features.learner, lf]),
        concat_blocks([features.course, cf]),
        {**features.encoders, "label_factors": {"rank": rank, "seed": seed, "scale": scale}},
    )


def _terms(terms: Sequence[Any]) -> tuple[Any, ...]:
    """Config lists -> design terms: a string, or a pair (a cross) as a tuple."""
    return tuple(t if isinstance(t, str) else tuple(t) for t in terms)


def row_designs(
    rows: RowSet,
    features: EntityFeatures,
    *,
    global_terms: Sequence[Any] = ("learner", "course"),
    crosses: Sequence[Sequence[str]] = (),
    coordinates: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, FeatureBlock]:
    """One design per coordinate for `rows` ({"global": ..., "per_learner": ..., ...})."""
    coords = None if coordinates is None else {k: _terms(v) for k, v in coordinates.items()}
    return design_matrices(
        rows.learner_idx,
        rows.course_idx,
        features.learner,
        features.course,
        crosses=_terms(crosses),
        global_terms=_terms(global_terms),
        coordinates=coords,
        intercept=True,
    )
