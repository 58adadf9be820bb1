"""blend: retrieve with the two-tower, re-rank with a blender of both models' scores.

    builder = CandidateBuilder(n_retrieve=200, n_fallback=20)
    table = builder.build(learner_ids, log=log, fold=split.test, retriever=rec, scorer=glmix)
    blender = PersonalizedBlender(["ncf_z", "glmix_logit", "log_popularity", "course_age",
                                  "retrieval_rank"]).fit(table, labels, sample_weight=w)
    table["blend_score"] = blender.score(table)
    lists = served_lists(table, "blend_score", k=10, route=route)  # learner_id, rank, course_id,
                                                                    # score, source
Stages of the package, one module each:
    candidates / points   the candidate table at a cutoff: the two-tower's top-N, popular
                          fallback courses, both models' scores, the features (features.py)
    blenders              fixed-weight linear, reciprocal-rank fusion, global logistic, rank
                          (soft-rank loss), and
                          the personalized GLMix blender (per-segment + per-learner effects)
    selection / variants  fit on the blend window, choose settings on validation (without
                          one: on the mean over random divisions of one window's labels)
    replay                tune linear weights by offline replay (mean rank, expected clicks
                          under a click-by-position curve): gradient, Nelder-Mead, DE
    evaluate / study      metrics, the tournament (paired bootstrap over learners)
    lists                 top-K and the fallback chain: blend -> two-tower -> popular in the
                          learner's segment and language -> globally popular

`blend` takes scores, not models: models are reached through the methods listed in
`blend.points` (the two-tower's `NCFRecommender` and GLMix's scorer provide them).
"""

from blend.blenders import (
    LinearBlender,
    LogisticBlender,
    PersonalizedBlender,
    RankBlender,
    RankFusionBlender,
)
from blend.candidates import build_candidates, seen_before
from blend.evaluate import candidate_auc, candidate_labels, list_metrics, tournament, window_truth
from blend.features import CONTEXT_FEATURES, NCF_NORMALIZATIONS, add_features
from blend.item_item import ItemItem, LearnerLearner
from blend.lists import ROUTES, routes, served_lists, top_k
from blend.points import CandidateBuilder, check_serves_fold
from blend.popularity import Popularity
from blend.replay import PositionCurve, ReplaySet, tune_weights
from blend.selection import LabelledPoint, Variant, compare, compare_draws, label_draws
from blend.study import choose_blenders, judge_systems, replay_study
from blend.variants import KINDS, make_variants
from blend.workflow import Points, run_study

__all__ = [
    "CONTEXT_FEATURES",
    "KINDS",
    "NCF_NORMALIZATIONS",
    "ROUTES",
    "CandidateBuilder",
    "check_serves_fold",
    "ItemItem",
    "LearnerLearner",
    "LabelledPoint",
    "LinearBlender",
    "LogisticBlender",
    "PersonalizedBlender",
    "Points",
    "Popularity",
    "PositionCurve",
    "RankBlender",
    "RankFusionBlender",
    "ReplaySet",
    "Variant",
    "add_features",
    "build_candidates",
    "candidate_auc",
    "candidate_labels",
    "choose_blenders",
    "compare",
    "compare_draws",
    "judge_systems",
    "label_draws",
    "list_metrics",
    "make_variants",
    "replay_study",
    "routes",
    "run_study",
    "seen_before",
    "served_lists",
    "top_k",
    "tournament",
    "tune_weights",
    "window_truth",
]
