"""Bad input at the blend stage: each gets a clear error or the documented fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from blend import CandidateBuilder, PersonalizedBlender, served_lists
from blend.workflow import learner_routes
from tests.blend_fakes import NoisyTruthRetriever
from watchlog import UnknownIdError
from watchlog.candidates import CandidateError
from watchlog.cleaning import clean
from watchlog.splits import temporal_split


@pytest.fixture(scope="module")
def world(small_platform):
    log = clean(small_platform.log)
    split = temporal_split(log, valid_days=30, test_days=30, blend_days=30)
    return log, small_platform.truth, split.test


class _Broken(NoisyTruthRetriever):
    """A retriever that returns what a broken model would."""

    def __init__(self, *args, course=None, nan_rows=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.course, self.nan_rows = course, nan_rows

    def recommend_table(self, learner_ids, N, *, filter_already_watched=True):
        t = super().recommend_table(learner_ids, N, filter_already_watched=filter_already_watched)
        if self.course is not None:
            t["course_id"] = t["course_id"].astype(object)
            t.loc[0, "course_id"] = self.course
            t["course_id"] = t["course_id"].astype("str")
        if self.nan_rows:
            t.loc[list(self.nan_rows), "ncf_score"] = np.nan
        return t


def test_a_learner_unknown_everywhere_gets_the_global_list_not_an_exception(world):
    log, truth, fold = world
    builder = CandidateBuilder(n_retrieve=5, n_fallback=10)
    table = builder.build(
        ["L0003", "ghost"], log=log, fold=fold, retriever=NoisyTruthRetriever(log, truth)
    )
    ghost = table[table["learner_id"] == "ghost"]
    assert not ghost["has_history"].any() and ghost["segment"].isna().all()
    lists = served_lists(table, "ncf_score", 10, route=learner_routes(table))
    mine = lists[lists["learner_id"] == "ghost"]
    assert len(mine) == 10 and set(mine["source"]) == {"popular_global"}


def test_a_course_missing_from_the_catalogue_is_named(world):
    log, truth, fold = world
    bad = _Broken(log, truth, course="C-not-in-catalogue")
    with pytest.raises(UnknownIdError, match="C-not-in-catalogue"):
        CandidateBuilder(n_retrieve=5).build(["L0003"], log=log, fold=fold, retriever=bad)


def test_nan_or_infinite_model_scores_are_refused_with_examples(world):
    log, truth, fold = world
    bad = _Broken(log, truth, nan_rows=(1, 2))
    with pytest.raises(CandidateError, match=r"ncf_score: scores must be finite; 2 of"):
        CandidateBuilder(n_retrieve=5, n_fallback=0).build(
            ["L0003"], log=log, fold=fold, retriever=bad
        )
    table = CandidateBuilder(n_retrieve=5, n_fallback=0).build(
        ["L0003", "L0010"], log=log, fold=fold, retriever=NoisyTruthRetriever(log, truth)
    )
    table.loc[3, "ncf_z"] = np.inf
    blender = PersonalizedBlender(["ncf_z", "log_popularity"])
    with pytest.raises(ValueError, match="feature 'ncf_z': 1 of 10 candidates are NaN or infinite"):
        blender.fit(table, np.r_[1, np.zeros(9)])


def test_an_empty_candidate_set_gives_empty_lists(world):
    log, truth, fold = world
    table = CandidateBuilder().build(
        [], log=log, fold=fold, retriever=NoisyTruthRetriever(log, truth)
    )
    assert len(table) == 0 and {"ncf_score", "ncf_z", "has_history"} <= set(table.columns)
    lists = served_lists(table.assign(s=np.zeros(0)), "s", 10, route=pd.Series(dtype=object))
    assert len(lists) == 0 and list(lists.columns) == [
        "learner_id", "rank", "course_id", "score", "source",
    ]  # fmt: skip


def test_repeated_learner_ids_are_refused(world):
    log, truth, fold = world
    with pytest.raises(ValueError, match="1 repeated ids"):
        CandidateBuilder().build(
            ["L0003", "L0003"], log=log, fold=fold, retriever=NoisyTruthRetriever(log, truth)
        )
