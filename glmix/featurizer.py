"""(learner id, course id) pairs -> GLMix designs, from the learner and course tables alone.

`EntityFeaturizer` is fitted once (encoders on the entity tables, label factors on the
training rows) and then builds designs for any pairs:

    feat = EntityFeaturizer(learner_spec, course_spec, factor_rank=4,
                            coordinates={"per_learner": ["course"], "per_course": ["learner"]})
    feat.fit(log.learners, log.courses, learner_ids=..., course_ids=..., y=...)  # training rows
    enc = feat.encode(learners, courses)        # entity level, once: blocks + id look-up
    lpos, cpos = enc.positions("learner", learner_ids), enc.positions("course", course_ids)
    designs = feat.designs(enc, lpos, cpos)     # {"global", "per_learner", ...} per pair

Tables may come in any row order; `encode` keeps the table's order and `positions` looks ids
up in it. Each encoded block has one extra last row: the encoding of an entity whose every
feature is missing, which `positions` gives to ids absent from the table (counted). The
design layout (`watchlog.design_matrices` terms) is part of the featurizer, so the saved
state (`to_dict` + `factor_arrays`) rebuilds the very designs the model was fitted on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from glmix.entity_features import LabelFactors, TableEncoder, check_entity_table
from watchlog.collaborative import concat_blocks
from watchlog.design import design_matrices
from watchlog.features import FeatureBlock, to_csr32
from watchlog.idmap import positions_in
from watchlog.report import DataReport

__all__ = ["EntityFeaturizer", "EncodedEntities"]

STATE_VERSION = 1


@dataclass(frozen=True, eq=False)
class EncodedEntities:
    """Encoded entity tables: blocks (n_table + 1, p) whose last row is the all-missing
    entity, and the tables' ids (position = block row)."""

    learner: FeatureBlock
    course: FeatureBlock
    learner_ids: pd.Index
    course_ids: pd.Index
    counts: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # {side: {column: encoder counts}} of the tables encoded (TableEncoder.transform_counts)

    def positions(self, side: str, ids) -> tuple[np.ndarray, np.ndarray]:
        """((n,) int64 block rows of `ids`, (n,) bool: id absent from the table, which gets
        the all-missing row). ids: an array, or a categorical column (looked up per category)."""
        index = self.learner_ids if side == "learner" else self.course_ids
        pos = positions_in(index, ids)
        unknown = pos < 0
        return np.where(unknown, len(index), pos).astype(np.int64), unknown


def _terms(terms: Sequence[Any]) -> tuple[Any, ...]:
    """Config lists -> design terms: a string, or a pair (a cross) as a tuple."""
    return tuple(t if isinstance(t, str) else tuple(t) for t in terms)


def _plain(terms: Sequence[Any]) -> list[Any]:
    """Design terms -> JSON: a string, or a pair (a cross) as a list."""
    return [t if isinstance(t, str) else list(t) for t in terms]


class EntityFeaturizer(BaseEstimator):
    """Entity tables -> per-pair GLMix designs (see the module docstring).

    learner, course: `TableEncoder` specs (FeatureEncoder arguments + optional `scaled`).
    factor_rank: add rank-r factors of the training label matrix as group "factors" to both
      sides (None / 0: none); factor_scale: their root-mean-square; factor_seed: the SVD seed.
    global_terms, crosses, coordinates: the design layout (`watchlog.design_matrices`);
      coordinates None = its default (per_learner on course features, per_course on learner
      features).
    Fitted: encoders_ {"learner", "course": TableEncoder}, factors_ (LabelFactors or None).
    """

    def __init__(
        self,
        learner: Mapping[str, Any],
        course: Mapping[str, Any],
        *,
        factor_rank: int | None = None,
        factor_scale: float = 1.0,
        factor_seed: int = 0,
        global_terms: Sequence[Any] = ("learner", "course"),
        crosses: Sequence[Sequence[str]] = (),
        coordinates: Mapping[str, Sequence[Any]] | None = None,
    ):
        self.learner = learner
        self.course = course
        self.factor_rank = factor_rank
        self.factor_scale = factor_scale
        self.factor_seed = factor_seed
        self.global_terms = global_terms
        self.crosses = crosses
        self.coordinates = coordinates

    # ---- fit ----------------------------------------------------------------------------------
    def fit(
        self,
        learners: pd.DataFrame,
        courses: pd.DataFrame,
        *,
        learner_ids=None,
        course_ids=None,
        y=None,
        report: DataReport | None = None,
    ) -> EntityFeaturizer:
        """Fit the encoders on the entity tables (they hold no labels) and, with factor_rank,
        the label factors on the training rows (learner_ids, course_ids, y): (n,) each, ids
        present in the tables. Never give it validation or test rows: their labels leak."""
        lidx = check_entity_table(learners, "learner")
        cidx = check_entity_table(courses, "course")
        self.encoders_ = {
            "learner": TableEncoder(self.learner, "learner").fit(learners, report),
            "course": TableEncoder(self.course, "course").fit(courses, report),
        }
        self.factors_ = None
        if self.factor_rank:
            if learner_ids is None or course_ids is None or y is None:
                raise ValueError(
                    "EntityFeaturizer.fit: factor_rank needs the training rows "
                    "(learner_ids, course_ids, y)"
                )
            self.factors_ = LabelFactors.fit(
                lidx, cidx, learner_ids, course_ids, y,
                rank=int(self.factor_rank), scale=float(self.factor_scale),
                seed=int(self.factor_seed),
            )  # fmt: skip
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoders_"):
            raise RuntimeError("EntityFeaturizer is not fitted: call fit (or GLMixScorer.load)")

    # ---- designs ------------------------------------------------------------------------------
    def encode(
        self, learners: pd.DataFrame, courses: pd.DataFrame, report: DataReport | None = None
    ) -> EncodedEntities:
        """Both tables encoded (entity level, small), each plus its all-missing last row."""
        self._check_fitted()
        blocks, ids, counts = {}, {}, {}
        for side, table in (("learner", learners), ("course", courses)):
            ids[side] = check_entity_table(table, side)
            enc = self.encoders_[side]
            parts = [enc.encode(table, report), enc.encode_missing(table)]  # (n, p), (1, p)
            counts[side] = enc.transform_counts()
            if self.factors_ is not None:  # an entity absent from the table: zero factors
                parts = [
                    concat_blocks([parts[0], self.factors_.block(side, ids[side])]),
                    concat_blocks([parts[1], self.factors_.zeros(side, 1)]),
                ]
            m = to_csr32(sp.vstack([parts[0].matrix, parts[1].matrix], format="csr"))
            blocks[side] = FeatureBlock(m, parts[0].names, dict(parts[0].groups))
        return EncodedEntities(
            blocks["learner"], blocks["course"], ids["learner"], ids["course"], counts
        )

    def designs(
        self, encoded: EncodedEntities, learner_pos: np.ndarray, course_pos: np.ndarray
    ) -> dict[str, FeatureBlock]:
        """One design per coordinate ({"global": ..., "per_learner": ..., ...}) for the pairs
        (learner_pos[i], course_pos[i]): (n,) block rows from `encoded.positions`."""
        coords = self.coordinates
        return design_matrices(
            learner_pos,
            course_pos,
            encoded.learner,
            encoded.course,
            crosses=_terms(self.crosses),
            global_terms=_terms(self.global_terms),
            coordinates=None if coords is None else {k: _terms(v) for k, v in coords.items()},
            intercept=True,
        )

    # ---- plain-data state -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able state; the factor arrays go separately (`factor_arrays`)."""
        self._check_fitted()
        coords = self.coordinates
        return {
            "type": "EntityFeaturizer",
            "version": STATE_VERSION,
            "design": {
                "global_terms": _plain(self.global_terms),
                "crosses": _plain(self.crosses),
                "coordinates": None
                if coords is None
                else {k: _plain(v) for k, v in coords.items()},
            },
            "encoders": {side: enc.to_dict() for side, enc in self.encoders_.items()},
            "label_factors": None if self.factors_ is None else self.factors_.params(),
        }

    def factor_arrays(self) -> dict[str, np.ndarray] | None:
        """{learner_ids, learner, course_ids, course} (ids as caller ids) or None."""
        f = getattr(self, "factors_", None)
        if f is None:
            return None
        return {
            "learner_ids": f.learner_ids,
            "learner": f.learner,
            "course_ids": f.course_ids,
            "course": f.course,
        }

    @classmethod
    def from_dict(
        cls, state: Mapping[str, Any], factors: Mapping[str, Any] | None = None
    ) -> EntityFeaturizer:
        """Rebuild a fitted featurizer from `to_dict()` and (when it has label factors) the
        arrays of `factor_arrays()`."""
        if state.get("type") != "EntityFeaturizer" or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"EntityFeaturizer.from_dict: expected type 'EntityFeaturizer' version "
                f"{STATE_VERSION}; got {state.get('type')!r} version {state.get('version')!r}"
            )
        enc = {side: TableEncoder.from_dict(st, side) for side, st in state["encoders"].items()}
        lf = state.get("label_factors")
        d = state["design"]
        self = cls(
            enc["learner"].spec,
            enc["course"].spec,
            factor_rank=None if lf is None else lf["rank"],
            factor_scale=1.0 if lf is None else lf["scale"],
            factor_seed=0 if lf is None else lf["seed"],
            global_terms=_terms(d["global_terms"]),
            crosses=_terms(d["crosses"]),
            coordinates=None
            if d["coordinates"] is None
            else {k: _terms(v) for k, v in d["coordinates"].items()},
        )
        self.encoders_ = enc
        self.factors_ = None
        if lf is not None:
            if factors is None:
                raise ValueError(
                    "EntityFeaturizer.from_dict: the state has label factors; give their arrays "
                    "(factors=..., e.g. the scorer folder's factors.npz)"
                )
            self.factors_ = LabelFactors(
                learner_ids=pd.Index(factors["learner_ids"]),
                learner=np.asarray(factors["learner"], dtype=np.float32),
                course_ids=pd.Index(factors["course_ids"]),
                course=np.asarray(factors["course"], dtype=np.float32),
                rank=int(lf["rank"]),
                scale=float(lf["scale"]),
                seed=int(lf["seed"]),
                group=lf.get("group", "factors"),
            )
        return self
