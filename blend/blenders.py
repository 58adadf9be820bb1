"""Blenders: one score per candidate from the models' scores and the context features.

Every blender is `fit(candidates, labels, sample_weight=None) -> self` and
`score(candidates) -> (n,) float64`, on a candidate table (`watchlog.candidates`: learner_id,
course_id, feature columns; learners contiguous). Higher is better; only the order within a
learner matters for the lists.

    LinearBlender(weights)          fixed weights on standardized features (a baseline, and what
                                    replay tuning sets); fit only learns the standardization
    RankFusionBlender(columns, k)   reciprocal-rank fusion: sum over columns of 1 / (k + rank)
    LogisticBlender(features, l2)   one global L2 logistic regression (glmix.FixedEffect)
    RankBlender(features, tau, objective)
                                    linear weights that optimize the soft rank of the learners'
                                    engaged candidates among their candidates (the replay
                                    objectives of `blend.replay`: mean rank, or ApproxNDCG;
                                    learning to rank, pairwise)
    PersonalizedBlender(features, ...)
                                    a GLMix on the same features: global coefficients plus
                                    per-segment and per-learner random-effect coefficients,
                                    each shrunk toward the level above by its L2; a learner the
                                    blender never saw gets the global + its segment's weights

Features are standardized with the fitted mean and standard deviation, so one L2 suits them
all and weights are comparable. Non-finite feature values are an input error (named, counted),
and so is a table that breaks the candidate contract where it would change the result (a
repeated pair or scattered learner rows in `fit`, and in the rank fusion's `score`, whose ranks
are within the learner), or an empty one in `fit`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from blend.replay import ReplaySet, engagement_weights, tune_weights
from glmix import FixedEffect, GLMix, RandomEffect
from watchlog.candidates import LEARNER, learner_bounds, validate_candidates
from watchlog.idmap import id_kind

__all__ = [
    "LinearBlender",
    "RankFusionBlender",
    "LogisticBlender",
    "PersonalizedBlender",
    "RankBlender",
    "feature_matrix",
    "ranks_within_learner",
]

_N_EXAMPLES = 5
RANK_OBJECTIVES = ("mean_rank", "ndcg")  # RankBlender's: the replay objectives needing no curve


def feature_matrix(candidates: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """(n, p) float64 of the named columns; missing columns and non-finite values raise."""
    absent = [f for f in features if f not in candidates.columns]
    if absent:
        raise KeyError(
            f"blender features {absent} are not columns of the candidates "
            f"({list(candidates.columns)})"
        )
    X = candidates[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(X)
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        rows = np.flatnonzero(bad[:, col])
        ex = candidates.iloc[rows[:_N_EXAMPLES]][[LEARNER, "course_id"]].to_numpy().tolist()
        raise ValueError(
            f"blender feature {features[col]!r}: {int(bad[:, col].sum()):,} of {len(X):,} "
            f"candidates are NaN or infinite (e.g. {ex}); a model could not score them"
        )
    return X


def _fit_table(candidates: pd.DataFrame, blender: object) -> pd.DataFrame:
    """The table a blender is fitted on: the candidate contract (one row per pair, learners
    contiguous) and at least one row."""
    name = f"{type(blender).__name__}.fit: candidates"
    validate_candidates(candidates, name=name)
    if len(candidates) == 0:
        raise ValueError(f"{name}: no candidates to fit on (0 rows)")
    return candidates


def _columns(columns: str | Sequence[str]) -> list[str]:
    """A column name or a sequence of them, as a list (a lone string is one column)."""
    return [columns] if isinstance(columns, str) else list(columns)


def ranks_within_learner(candidates: pd.DataFrame, column: str) -> np.ndarray:
    """(n,) float64 1-based rank of each row by `column` (descending) within its learner;
    tied rows share the mean of their ranks (fractional ranking), so that a rank, and a score
    made of ranks, never depends on the table's row order."""
    if len(candidates) == 0:
        return np.empty(0, dtype=np.float64)
    bounds = learner_bounds(candidates)
    sizes = np.diff(bounds)
    group = np.repeat(np.arange(len(sizes)), sizes)
    values = candidates[column].to_numpy(np.float64)
    order = np.lexsort((-values, group))  # by learner, best first
    place = np.arange(len(values)) - np.repeat(bounds[:-1], sizes) + 1  # (n,) in that order
    g, v = group[order], values[order]
    tie_run = np.cumsum(np.r_[True, (g[1:] != g[:-1]) | (v[1:] != v[:-1])]) - 1  # (n,)
    mean = np.bincount(tie_run, weights=place) / np.bincount(tie_run)  # (runs,)
    rank = np.empty(len(values))
    rank[order] = mean[tie_run]
    return rank


class _Standardized(BaseEstimator):
    """Shared: learn the features' mean and scale on fit; transform to z-scores."""

    features: Sequence[str]
    _fitted_attributes: tuple[str, ...] = ("mean_", "scale_")  # what fit sets

    def _check_fitted(self) -> None:
        """The module's error for a blender used before `fit`, not an AttributeError from
        deep inside."""
        if not all(hasattr(self, a) for a in self._fitted_attributes):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit first")

    def _fit_scaler(self, X: np.ndarray) -> None:
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)  # a constant column: centred only

    def _fit_z(self, candidates: pd.DataFrame, labels) -> tuple[np.ndarray, np.ndarray]:
        """Checks the table, features and labels, fits the scaler: (Z (n, p) standardized,
        y (n,))."""
        X = feature_matrix(_fit_table(candidates, self), self.features)
        y = _labels(labels, len(X))
        self._fit_scaler(X)
        return (X - self.mean_) / self.scale_, y

    def _z(self, candidates: pd.DataFrame) -> np.ndarray:
        self._check_fitted()
        return (feature_matrix(candidates, self.features) - self.mean_) / self.scale_

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        """(n,) the global weights on the standardized features."""
        return self._z(candidates) @ self._global_coef()

    def coefficients(self) -> dict[str, float]:
        """Global weights per feature, on the standardized scale."""
        self._check_fitted()
        return dict(zip(self.features, map(float, self._global_coef()), strict=True))


class LinearBlender(_Standardized):
    """score = sum_f weights[f] * z_f (fixed weights; see the module docstring)."""

    def __init__(self, weights: Mapping[str, float]):
        self.weights = weights

    @property
    def features(self) -> list[str]:
        return list(self.weights)

    def fit(self, candidates: pd.DataFrame, labels=None, sample_weight=None) -> LinearBlender:
        self._fit_scaler(feature_matrix(_fit_table(candidates, self), self.features))
        return self

    def _global_coef(self) -> np.ndarray:
        return np.array([self.weights[f] for f in self.features], dtype=np.float64)

    def with_weights(self, w: Sequence[float]) -> LinearBlender:
        """A copy with new weights (same features, same fitted standardization)."""
        self._check_fitted()
        out = LinearBlender(dict(zip(self.features, map(float, w), strict=True)))
        out.mean_, out.scale_ = self.mean_, self.scale_
        return out


class RankFusionBlender(BaseEstimator):
    """Reciprocal-rank fusion: score = sum_c 1 / (k + rank_c), rank_c within the learner.

    It learns nothing, so `score` needs no `fit` (its ranks come from the table scored);
    `fit` only checks the table as the other blenders' fit does, for the common interface."""

    def __init__(self, columns: Sequence[str] = ("ncf_score", "glmix_logit"), k: float = 60.0):
        self.columns = columns
        self.k = k

    def fit(self, candidates: pd.DataFrame, labels=None, sample_weight=None) -> RankFusionBlender:
        # the same checks as the other blenders
        feature_matrix(_fit_table(candidates, self), _columns(self.columns))
        self.fitted_ = True
        return self

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        """(n,) float64; ranks are within the learner, so the table must hold each pair once
        with its learner's rows together (a repeated pair would move the others' ranks)."""
        columns = _columns(self.columns)
        validate_candidates(candidates, name="RankFusionBlender.score: candidates")
        feature_matrix(candidates, columns)
        out = np.zeros(len(candidates), dtype=np.float64)
        for c in columns:
            out += 1.0 / (self.k + ranks_within_learner(candidates, c))
        return out

    def coefficients(self) -> dict[str, float]:
        return dict.fromkeys(_columns(self.columns), 1.0)


def _slopes(effect: FixedEffect) -> np.ndarray:
    """The coefficients of the features, without the intercept the effect appended."""
    coef = np.asarray(effect.coef_, dtype=np.float64)
    return np.delete(coef, effect.intercept_index_) if effect.intercept_index_ >= 0 else coef


def _labels(labels, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if n == 0:
        raise ValueError("labels: no candidates to fit on (0 rows)")
    if y.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},) (one per candidate), got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: must be 0/1")
    if y.min() == y.max():
        raise ValueError(f"labels: need positives and negatives, got {int(y.sum()):,} of {n:,}")
    return y.astype(np.float64)


class LogisticBlender(_Standardized):
    """One global L2 logistic regression on the standardized features."""

    _fitted_attributes = ("mean_", "scale_", "model_")

    def __init__(self, features: Sequence[str], l2: float = 1.0):
        self.features = features
        self.l2 = l2

    def fit(self, candidates: pd.DataFrame, labels, sample_weight=None) -> LogisticBlender:
        Z, y = self._fit_z(candidates, labels)
        self.model_ = FixedEffect(l2=self.l2, dtype="float64").fit(
            Z, y, sample_weight=sample_weight
        )
        return self

    def _global_coef(self) -> np.ndarray:
        return _slopes(self.model_)


class RankBlender(_Standardized):
    """Linear weights fitted to rank: optimize a replay objective of each engaged candidate's
    soft rank among its learner's candidates (`blend.replay`, L-BFGS on the sigmoid surrogate
    with temperature `tau` annealed from 10 tau). objective: `mean_rank` (every engagement's
    rank counts alike) or `ndcg` (ApproxNDCG: gain 1 / log2(1 + rank), each learner's DCG over
    its ideal; the top of the list weighs most, as in the offline metric). The first feature's
    weight is fixed at 1 (ranking is scale-invariant), so it should be a strong one (the
    two-tower's score).

    Why beside the logistic blender: a pointwise loss spends itself on learners' base rates
    and on the easy negatives far down the list; the rank loss only asks that what a learner
    watched come above what they did not, among their own candidates. Sample weights
    weigh the engagements (the watch-time weights: a long watch counts more): a weighted mean
    rank, or for `ndcg` the weight as the engagement's graded gain. The weights of rows not
    engaged are not used: a pair's loss belongs to its engagement.

    Memory: one (engagement, other candidate of its learner) pair per row of the surrogate,
    ~40 bytes each; above `max_pairs` a seeded sample of the learners with an engagement is
    fitted on (`fit_learners_` of `learners_with_engagement_` says how many)."""

    _fitted_attributes = ("mean_", "scale_", "weights_")

    def __init__(
        self,
        features: Sequence[str],
        tau: float = 0.3,
        objective: str = "mean_rank",
        max_pairs: int = 50_000_000,
        seed: int = 0,
    ):
        self.features = features
        self.tau = tau
        self.objective = objective
        self.max_pairs = max_pairs
        self.seed = seed

    def fit(self, candidates: pd.DataFrame, labels, sample_weight=None) -> RankBlender:
        if self.objective not in RANK_OBJECTIVES:
            raise ValueError(
                f"RankBlender objective: must be one of {RANK_OBJECTIVES}, got {self.objective!r}"
            )
        Z, y = self._fit_z(candidates, labels)
        keep = self._learner_sample(candidates, y)  # (n,) bool: rows of the fitted learners
        w = None
        if sample_weight is not None:  # checked whole, before the learner sample takes rows
            w = engagement_weights(sample_weight, len(y), "sample_weight")[keep]
        replay = ReplaySet.from_candidates(
            candidates[keep], Z[keep], y[keep], list(self.features), weights=w
        )
        w0 = np.zeros(len(self.features))
        w0[0] = 1.0
        res = tune_weights(replay, w0, objective=self.objective, method="gradient", tau=self.tau)
        self.weights_ = np.array([res.weights[f] for f in self.features])
        self.fit_objective_ = res.objective  # exact, on the fitted rows: mean rank or NDCG
        return self

    def _learner_sample(self, candidates: pd.DataFrame, y: np.ndarray) -> np.ndarray:
        """Rows of all learners, or of a seeded sample of the engaged learners whose pairs
        fit in `max_pairs` (learners without an engagement add no pair either way)."""
        bounds = learner_bounds(candidates)
        sizes = np.diff(bounds)
        engaged = np.add.reduceat(y, bounds[:-1])  # (n_learners,) engagements (y has some)
        pairs = engaged * (sizes - 1)  # each engagement against the learner's other rows
        self.learners_with_engagement_ = int((engaged > 0).sum())
        if pairs.sum() <= self.max_pairs:
            self.fit_learners_ = self.learners_with_engagement_
            return np.ones(len(y), dtype=bool)
        order = np.random.default_rng(self.seed).permutation(np.flatnonzero(engaged > 0))
        chosen = order[: max(1, int(np.searchsorted(np.cumsum(pairs[order]), self.max_pairs)))]
        self.fit_learners_ = len(chosen)
        mask = np.zeros(len(sizes), dtype=bool)
        mask[chosen] = True
        return np.repeat(mask, sizes)

    def _global_coef(self) -> np.ndarray:
        return self.weights_


class PersonalizedBlender(_Standardized):
    """GLMix on the blend features: global + per-segment + per-learner coefficients.

    l2: the global coefficients' L2; segment_l2 / learner_l2: the random effects' slopes
    (large = close to the level above); intercept_l2: their intercepts (a learner's base rate,
    which does not change the order within a learner); passes: coordinate-descent passes.
    segment_column: the candidates' column of learner segments (None: no segment level)."""

    _fitted_attributes = ("mean_", "scale_", "model_")

    def __init__(
        self,
        features: Sequence[str],
        l2: float = 1.0,
        segment_l2: float = 30.0,
        learner_l2: float = 30.0,
        intercept_l2: float = 1.0,
        segment_column: str | None = "segment",
        passes: int = 2,
    ):
        self.features = features
        self.l2 = l2
        self.segment_l2 = segment_l2
        self.learner_l2 = learner_l2
        self.intercept_l2 = intercept_l2
        self.segment_column = segment_column
        self.passes = passes

    def _keys(self, candidates: pd.DataFrame) -> dict[str, np.ndarray]:
        keys = {"learner": candidates[LEARNER].to_numpy()}
        if self.segment_column is not None:
            if self.segment_column not in candidates.columns:
                raise KeyError(
                    f"segment_column {self.segment_column!r} is not a column of the candidates"
                )
            keys["segment"] = (
                candidates[self.segment_column].astype("string").fillna("<missing>").to_numpy()
            )
        return keys

    def fit(self, candidates: pd.DataFrame, labels, sample_weight=None) -> PersonalizedBlender:
        Z, y = self._fit_z(candidates, labels)  # (n, p); every coordinate appends its intercept
        self.learner_id_kind_ = id_kind(candidates[LEARNER].dtype, candidates[LEARNER])
        random = {}
        if self.segment_column is not None:
            random["per_segment"] = RandomEffect(
                key="segment", l2=self.segment_l2, intercept_l2=self.intercept_l2,
                dtype="float64",
            )  # fmt: skip
        random["per_learner"] = RandomEffect(
            key="learner", l2=self.learner_l2, intercept_l2=self.intercept_l2, dtype="float64"
        )
        self.model_ = GLMix(
            fixed=FixedEffect(l2=self.l2, dtype="float64"),
            random=random,
            passes=self.passes,
            keep_best=False,
        )
        designs = {"global": Z, **{name: Z for name in random}}
        self.model_.fit(designs, self._keys(candidates), y, sample_weight=sample_weight)
        return self

    def _global_coef(self) -> np.ndarray:
        return _slopes(self.model_.coordinates_["global"])

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        Z = self._z(candidates)
        self._check_id_kind(candidates[LEARNER], "score: candidates.learner_id")
        designs = {name: Z for name in self.model_.coordinates_}
        return self.model_.predict_logit(designs, self._keys(candidates))

    def known_learners(self, learner_ids) -> np.ndarray:
        """(n,) bool: learners with their own coefficients."""
        self._check_fitted()
        self._check_id_kind(pd.Series(learner_ids), "known_learners: learner_ids")
        ids = self.model_.coordinates_["per_learner"].ids_
        return ids.to_index(learner_ids, strict=False) >= 0

    def _check_id_kind(self, ids: pd.Series, what: str) -> None:
        """Learner ids of the kind fitted on: text ids against number ids would match no
        learner, and every learner would silently lose its own coefficients."""
        fitted = getattr(self, "learner_id_kind_", None)
        kind = id_kind(ids.dtype, ids) if len(ids) else None
        if fitted is not None and kind is not None and kind != fitted:
            raise TypeError(
                f"PersonalizedBlender.{what}: {kind} ids (dtype {ids.dtype}, e.g. "
                f"{ids.iloc[:3].tolist()}), but the blender was fitted on {fitted} ids: no "
                "learner would match its coefficients; give the ids as fitted"
            )
