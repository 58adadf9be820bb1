"""Entity-level features for GLMix: the learner and course tables encoded, plus label factors.

`TableEncoder` encodes one entity table (learners or courses) with a `FeatureEncoder`
(categorical, multi-hot, standardized numeric) and optional raw numerics times a fixed
factor (`scaled`, GDMix's MovieLens features); its fitted state is plain JSON data.

`LabelFactors` holds low-rank factors of the *training* label matrix
(`watchlog.collaborative.label_factors`) as entity-level arrays keyed by the caller's ids, so
they can be saved beside the model and gathered for any learner / course table later; an
entity without training rows has zero factors (as label_factors gives it).

`check_entity_table` is the input rule for every entity table: a DataFrame with a unique,
non-missing id column, in any row order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from watchlog.collaborative import concat_blocks, label_factors, scaled_numeric
from watchlog.features import FeatureBlock, FeatureEncoder, TableRowsError, to_csr32
from watchlog.idmap import positions_in
from watchlog.report import DataReport

__all__ = ["ID_COLUMNS", "TableEncoder", "LabelFactors", "check_entity_table", "rows_of"]

ID_COLUMNS = {"learner": "learner_id", "course": "course_id"}
TABLE_NAMES = {"learner": "learners", "course": "courses"}
_ENCODER_KEYS = ("categorical", "multi_hot", "numeric")
_N_EXAMPLES = 5


def _id_column(table: Any, side: str) -> pd.Series:
    name, col = TABLE_NAMES[side], ID_COLUMNS[side]
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame, got {type(table).__name__}")
    if col not in table.columns:
        raise KeyError(
            f"{name}: no {col!r} column (the entity id); columns are {list(table.columns)[:20]}"
        )
    return table[col]


def rows_of(table: Any, side: str, ids) -> pd.DataFrame:
    """The rows of the table whose id is in `ids` (the whole table when all are), so that
    scoring a chunk of pairs encodes only the entities it names."""
    keep = _id_column(table, side).isin(pd.unique(np.asarray(ids))).to_numpy()
    return table if keep.all() else table[keep]


def check_entity_table(table: Any, side: str) -> pd.Index:
    """The table's ids as a pd.Index (position = table row); raise on a bad table."""
    name, col = TABLE_NAMES[side], ID_COLUMNS[side]
    ids = pd.Index(_id_column(table, side))
    missing = np.asarray(ids.isna())
    if missing.any():
        rows = np.flatnonzero(missing)[:_N_EXAMPLES].tolist()
        raise TableRowsError(
            f"{name}.{col}: ids must not be missing; {int(missing.sum()):,} of {len(ids):,} "
            f"rows are (e.g. rows {rows})",
            rows=rows,
        )
    dup = np.asarray(ids.duplicated(keep=False))
    if dup.any():
        raise ValueError(
            f"{name}.{col}: ids must be unique (one row per {side}); {int(dup.sum()):,} of "
            f"{len(ids):,} rows share an id (e.g. {ids[dup].unique()[:_N_EXAMPLES].tolist()})"
        )
    return ids


def _missing_row(table: pd.DataFrame) -> pd.DataFrame:
    """One row of the table's columns, every value missing (NaN / NaT / NA, dtypes kept where
    they can hold a missing value), so an entity absent from the table encodes as missing."""
    return table.iloc[:0].reset_index(drop=True).reindex([0])


class TableEncoder:
    """One entity table -> FeatureBlock: FeatureEncoder columns, then `scaled` columns.

    spec: FeatureEncoder arguments (categorical, multi_hot, numeric, min_frequency,
    missing_indicator, separator) and optional `scaled: {column: factor}` (raw value times
    factor, missing -> 0; GDMix scales age by 1/100 and release year by 1/2000).
    Fitted: encoder_ (FeatureEncoder or None), scaled_ ({column: factor}).
    """

    def __init__(self, spec: Mapping[str, Any], side: str):
        self.spec = spec
        self.side = side

    def fit(self, table: pd.DataFrame, report: DataReport | None = None) -> TableEncoder:
        spec = dict(self.spec or {})
        self.scaled_ = {str(k): float(v) for k, v in (spec.pop("scaled", None) or {}).items()}
        self.encoder_ = None
        if any(spec.get(k) for k in _ENCODER_KEYS):
            self.encoder_ = FeatureEncoder(**spec).fit(table, report=report)
        if self.encoder_ is None and not self.scaled_:
            raise ValueError(f"features.{self.side}: no columns to encode")
        return self

    def encode(self, table: pd.DataFrame, report: DataReport | None = None) -> FeatureBlock:
        """(len(table), n_features) block; row i encodes table row i (position)."""
        blocks = []
        if self.encoder_ is not None:
            blocks.append(self.encoder_.encode(table, report=report))
        if self.scaled_:
            blocks.append(scaled_numeric(table, self.scaled_, report=report))
        return concat_blocks(blocks)

    def encode_missing(self, table: pd.DataFrame) -> FeatureBlock:
        """(1, n_features): the encoding of an entity whose every feature is missing (the
        encoder's `transform_counts_` keep describing the last real table)."""
        counts = getattr(self.encoder_, "transform_counts_", None)
        try:
            return self.encode(_missing_row(table))
        finally:
            if counts is not None:
                self.encoder_.transform_counts_ = counts

    def transform_counts(self) -> dict[str, dict[str, Any]]:
        """Per encoded column, the counts of the latest `encode` (rows, missing, and for text
        columns values, rare, unseen, distinct_unseen, unseen_examples); {} without one."""
        return dict(getattr(self.encoder_, "transform_counts_", None) or {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder": None if self.encoder_ is None else self.encoder_.to_dict(),
            "scaled": dict(self.scaled_),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], side: str) -> TableEncoder:
        enc = state.get("encoder")
        spec = dict(enc["params"]) if enc else {}
        if state.get("scaled"):
            spec["scaled"] = dict(state["scaled"])
        self = cls(spec, side)
        self.encoder_ = None if enc is None else FeatureEncoder.from_dict(enc)
        self.scaled_ = {str(k): float(v) for k, v in (state.get("scaled") or {}).items()}
        return self


@dataclass(frozen=True, eq=False)
class LabelFactors:
    """Label-matrix factors per entity, keyed by the caller's ids.

    learner_ids (n_l,) / learner (n_l, rank) float32; likewise course. Only entities with
    training rows are held; any other id gets zeros. group: the feature group name
    ("factors"), so a design term can ask for "course.factors".
    """

    learner_ids: pd.Index
    learner: np.ndarray
    course_ids: pd.Index
    course: np.ndarray
    rank: int
    scale: float
    seed: int
    group: str = "factors"

    @classmethod
    def fit(
        cls,
        learner_index: pd.Index,
        course_index: pd.Index,
        learner_ids,
        course_ids,
        y,
        *,
        rank: int,
        scale: float = 1.0,
        seed: int = 0,
    ) -> LabelFactors:
        """Factors of the label matrix of the rows (learner_ids[i], course_ids[i], y[i]).

        learner_index / course_index: every entity (the tables' ids, in table order: the
        matrix rows / columns, which fix the seeded SVD's result); rows' ids must be in them.
        """
        li = _codes(learner_index, learner_ids, "learner")
        ci = _codes(course_index, course_ids, "course")
        shape = (len(learner_index), len(course_index))
        lf, cf = label_factors(li, ci, np.asarray(y), shape, rank=rank, seed=seed, scale=scale)
        held = {}
        for side, block, seen, index in (
            ("learner", lf, li, learner_index),
            ("course", cf, ci, course_index),
        ):
            keep = np.zeros(len(index), dtype=bool)
            keep[seen] = True  # entities with training rows; the others are zeros anyway
            held[side] = (index[keep], block.matrix.toarray()[keep].astype(np.float32))
        return cls(*held["learner"], *held["course"], int(rank), float(scale), int(seed))

    def block(self, side: str, ids: pd.Index) -> FeatureBlock:
        """(len(ids), rank) factors of `ids` (zeros for ids without training rows), names
        lf0.. / cf0.. in one group."""
        index, values = (
            (self.learner_ids, self.learner)
            if side == "learner"
            else (self.course_ids, self.course)
        )
        pos = index.get_indexer(ids) if len(index) else np.full(len(ids), -1)  # (n,) -1: none
        out = np.zeros((len(ids), self.rank), dtype=np.float32)
        out[pos >= 0] = values[pos[pos >= 0]]
        return self._as_block(side, out)

    def zeros(self, side: str, n: int) -> FeatureBlock:
        """(n, rank) zeros, named as `block` names them (entities without training rows)."""
        return self._as_block(side, np.zeros((n, self.rank), dtype=np.float32))

    def _as_block(self, side: str, values: np.ndarray) -> FeatureBlock:
        prefix = "lf" if side == "learner" else "cf"
        names = tuple(f"{prefix}{j}" for j in range(self.rank))
        return FeatureBlock(to_csr32(values), names, {self.group: (0, self.rank)})

    def params(self) -> dict[str, Any]:
        return {"rank": self.rank, "scale": self.scale, "seed": self.seed, "group": self.group}


def _codes(index: pd.Index, ids, side: str) -> np.ndarray:
    """(n,) positions of the rows' ids in the entity index; every id must be there."""
    codes = positions_in(index, ids)
    bad = codes < 0
    if bad.any():
        ex = pd.unique(np.asarray(ids)[bad])[:_N_EXAMPLES].tolist()
        raise KeyError(
            f"label factors: {int(bad.sum()):,} of {len(codes):,} training rows have a {side} "
            f"id that is not in the {TABLE_NAMES[side]} table (e.g. {ex})"
        )
    return codes.astype(np.int64)
