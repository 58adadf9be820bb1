"""glmix: watch-time-weighted GLMix with batched per-entity solvers and coordinate descent.

    logit = global(x) + per-learner coefficients . course features
                      + per-course coefficients . learner features  [+ more coordinates]

Typical use, on the per-event designs of `watchlog.design_matrices` (FeatureBlocks
{"global", "per_learner", "per_course"}, one row per impression):

    from glmix import GLMix, FixedEffect, RandomEffect, watch_time_weights

    designs = design_matrices(ev.learner_idx, ev.course_idx, learner_block, course_block)
    keys = {"learner": ev.learner_idx.to_numpy(), "course": ev.course_idx.to_numpy()}
    w = watch_time_weights(ev.clicked, ev.watch_seconds, kind="log1p").weights
    model = GLMix(
        fixed=FixedEffect(l2=1.0),
        random={
            "per_learner": RandomEffect(key="learner", l2=10.0, intercept_l2=1.0),
            "per_course": RandomEffect(key="course", l2=10.0, intercept_l2=1.0),
        },
        passes=2,
    ).fit(designs, keys, ev.clicked, sample_weight=w,
          validation=(val_designs, val_keys, val_y))
    p = model.predict_proba(test_designs, test_keys)[:, 1]
    parts = model.score_components(test_designs, test_keys)  # .components, .n_unknown
    model.evaluate(test_designs, test_keys, test_y, per_entity="learner")  # AUC, log loss
    model.history_                                  # objective + validation AUC per update
    model.save("runs/glmix"); model = GLMix.load("runs/glmix")

From entity tables to scores, with nothing but the saved folder (glmix.scorer):

    trained = fit_on_split(log, split, model=GLMix(...), featurizer=EntityFeaturizer(
        learner={"categorical": ["segment"]}, course={"categorical": ["category"]}))
    trained.scorer.save("runs/glmix/model")
    scorer = GLMixScorer.load("runs/glmix/model")
    scorer.score_table(learner_ids, course_ids, learners=log.learners, courses=log.courses)

Designs may also be scipy CSR matrices or dense arrays (features named x0, x1, ...); keys
are ids of any hashable type. Each coordinate is an estimator of its own:
`RandomEffect(...).fit(X, entity_ids, y, sample_weight, offset)` solves every entity's
regression in one batched Newton problem (glmix.solvers), `FixedEffect(...).fit(X, y, ...)`
one L-BFGS / FISTA problem. Scale-out over torch.distributed: glmix.distributed.

Modules: solvers (batched Newton), random_effect, fixed_effect, model (GLMix), weighting,
io (save / load), distributed; the feature pipeline: rows (row sets of a split, sample
weights), entity_features (table encoders, label factors), featurizer (pairs -> designs),
scorer (GLMixScorer: model + featurizer, saved together), training (fit on a split).
"""

from glmix.distributed import Comm, run_distributed
from glmix.entity_features import LabelFactors, TableEncoder
from glmix.featurizer import EncodedEntities, EntityFeaturizer
from glmix.fixed_effect import FixedEffect
from glmix.io import load_model, save_model
from glmix.model import ComponentScores, GLMix
from glmix.random_effect import RandomEffect
from glmix.rows import RowSet, row_sets, sample_weights
from glmix.scorer import GLMixScorer, UnknownEntityError
from glmix.solvers import NewtonResult, newton_logistic
from glmix.training import TrainedGLMix, fit_on_split, row_designs
from glmix.weighting import WATCH_WEIGHTINGS, WatchTimeWeights, watch_time_weights

__all__ = [
    "WATCH_WEIGHTINGS",
    "Comm",
    "ComponentScores",
    "EncodedEntities",
    "EntityFeaturizer",
    "FixedEffect",
    "GLMix",
    "GLMixScorer",
    "LabelFactors",
    "NewtonResult",
    "RandomEffect",
    "RowSet",
    "TableEncoder",
    "TrainedGLMix",
    "UnknownEntityError",
    "WatchTimeWeights",
    "fit_on_split",
    "load_model",
    "newton_logistic",
    "row_designs",
    "row_sets",
    "run_distributed",
    "sample_weights",
    "save_model",
    "watch_time_weights",
]
