"""The blend features of every candidate, added as columns of the candidate table.

    ncf_z             the two-tower score as a per-learner z-score over the whole catalogue
    ncf_log_softmax   the two-tower score as a per-learner log-softmax over the whole catalogue
    glmix_*           GLMix's logit and its components (fixed, per-learner, per-course), when a
                      GLMix scorer filled them
    log_popularity    log1p(the course's watches in the popularity window before the cutoff)
    course_age        log1p(days from the course's publication to the cutoff; 0 if later)
    retrieval_rank    log(the two-tower's retrieval rank); n_retrieve + 1 for fallback-only pairs
    ease_z            the item-item (EASE) score as a z-score over the learner's candidates,
                      when the candidate builder has an item-item scorer (`blend.item_item`)
    learner_ease_z    the learner-learner (EASE with learners as items) score, likewise, when
                      it has one (`blend.LearnerLearner`; off by default)

The two normalizations of the two-tower score answer different questions (how far above this
learner's typical course, vs. how much of this learner's probability mass): the blend stage
keeps the one that does better on validation. Everything is per row or a gather from
per-learner / per-course arrays: no loop per learner.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from blend.popularity import Popularity
from watchlog import EventLog
from watchlog.candidates import COURSE, LEARNER, learner_bounds

__all__ = ["NCF_NORMALIZATIONS", "CONTEXT_FEATURES", "add_features", "zscore_within_learner"]

NCF_NORMALIZATIONS = {"zscore": "ncf_z", "log_softmax": "ncf_log_softmax"}
CONTEXT_FEATURES = ("log_popularity", "course_age", "retrieval_rank")
_DAY = pd.Timedelta(days=1)


def add_features(
    table: pd.DataFrame,
    *,
    stats: pd.DataFrame,
    log: EventLog,
    popularity: Popularity,
    segment_column: str | None = "segment",
) -> pd.DataFrame:
    """`table` (from `build_candidates`, optionally with GLMix columns) with the feature
    columns above added, plus the learner's segment (for a per-segment blender; missing for
    learners absent from the learner table). stats: `learner_id, ncf_mean, ncf_std,
    ncf_logsumexp` per learner (the two-tower's `score_stats`)."""
    out = table.copy()
    pos = pd.Index(stats[LEARNER]).get_indexer(pd.Index(table[LEARNER]))
    if (pos < 0).any():
        missing = pd.unique(table[LEARNER].to_numpy()[pos < 0])[:5].tolist()
        raise KeyError(f"stats: no two-tower statistics for learners {missing}")
    s = table["ncf_score"].to_numpy(np.float64)
    mean = stats["ncf_mean"].to_numpy(np.float64)[pos]
    std = stats["ncf_std"].to_numpy(np.float64)[pos]
    out["ncf_z"] = (s - mean) / np.where(std > 0, std, 1.0)
    out["ncf_log_softmax"] = s - stats["ncf_logsumexp"].to_numpy(np.float64)[pos]

    course = log.course_ids.to_index(table[COURSE]).astype(np.int64)
    out["log_popularity"] = popularity.log_count[course]
    out["course_age"] = _course_age(log, popularity.cutoff)[course]
    out["retrieval_rank"] = np.log(table["ncf_rank"].to_numpy(np.float64))
    if segment_column is not None and segment_column in log.learners.columns:
        # ids of another kind than the log's would all look absent: every segment missing
        log.learner_ids.check_kind(table[LEARNER], f"add_features: table.{LEARNER}")
        learner = log.learner_ids.to_index(table[LEARNER], strict=False)
        values = log.learners[segment_column].astype("string").to_numpy(dtype=object)
        seg = np.where(learner >= 0, values[np.maximum(learner, 0)], None)
        out["segment"] = pd.array(seg, dtype="string")
    return out


def zscore_within_learner(table: pd.DataFrame, column: str) -> np.ndarray:
    """(n,) float64 `column` as a z-score over each learner's rows (learners contiguous); a
    learner whose rows are all equal gets 0."""
    bounds = learner_bounds(table)
    sizes = np.diff(bounds)
    x = table[column].to_numpy(np.float64)
    if len(x) == 0:
        return x
    mean_rows = np.repeat(np.add.reduceat(x, bounds[:-1]) / sizes, sizes)
    var = np.add.reduceat((x - mean_rows) ** 2, bounds[:-1]) / sizes  # (n_learners,)
    std_rows = np.repeat(np.sqrt(var), sizes)
    return (x - mean_rows) / np.where(std_rows > 1e-12, std_rows, 1.0)


def _course_age(log: EventLog, cutoff: pd.Timestamp) -> np.ndarray:
    """(n_courses,) log1p(days since publication at the cutoff); courses without a date get
    the median age (the count is in the blend report via `missing_course_dates`)."""
    if "published_at" not in log.courses.columns:
        return np.zeros(log.n_courses)
    published = pd.to_datetime(log.courses["published_at"], utc=True)
    days = ((cutoff - published) / _DAY).to_numpy(dtype=np.float64, na_value=np.nan)
    days = np.maximum(days, 0.0)
    known = ~np.isnan(days)
    fill = float(np.median(days[known])) if known.any() else 0.0
    return np.log1p(np.where(known, days, fill))


def missing_course_dates(log: EventLog) -> int:
    """Courses whose age is filled with the median (no `published_at`)."""
    if "published_at" not in log.courses.columns:
        return log.n_courses
    return int(log.courses["published_at"].isna().sum())
