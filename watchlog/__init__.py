"""watchlog: the event schema and its validation, loaders, cleaning, leakage-free splits,
co-watch similarity and GLMix feature encoding. Imports no model package."""

from watchlog.cleaning import CleaningConfig, clean
from watchlog.cowatch import CoWatchSimilarity, cowatch_similarity
from watchlog.design import design_matrices, face_split
from watchlog.eventlog import DUPLICATE_POLICIES, EventLog
from watchlog.features import FeatureBlock, FeatureEncoder
from watchlog.idmap import IdMap, UnknownIdError
from watchlog.report import DataReport
from watchlog.schema import Problem, SchemaError
from watchlog.splits import (
    Fold,
    LeakageError,
    Split,
    assert_no_leakage,
    leave_latest_out,
    random_split,
    rolling_folds,
    stratified_split,
    temporal_split,
)

__all__ = [
    "DUPLICATE_POLICIES",
    "CleaningConfig",
    "CoWatchSimilarity",
    "DataReport",
    "EventLog",
    "FeatureBlock",
    "FeatureEncoder",
    "Fold",
    "IdMap",
    "LeakageError",
    "Problem",
    "SchemaError",
    "Split",
    "UnknownIdError",
    "assert_no_leakage",
    "clean",
    "cowatch_similarity",
    "design_matrices",
    "face_split",
    "leave_latest_out",
    "random_split",
    "rolling_folds",
    "stratified_split",
    "temporal_split",
]
