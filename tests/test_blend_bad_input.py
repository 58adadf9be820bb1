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


def test_learner_ids_of_another_kind_than_the_logs_are_refused_not_served_as_unknown(world):
    """Number ids against a log of text ids matched no learner: every learner silently got
    the global fallback list, no segment, no labels and an empty judged list."""
    from blend.candidates import seen_in
    from blend.evaluate import candidate_labels, list_metrics, window_truth
    from blend.features import add_features

    log, truth, fold = world
    builder = CandidateBuilder(n_retrieve=5, n_fallback=5)
    rec = NoisyTruthRetriever(log, truth)
    with pytest.raises(TypeError, match=r"learner_ids: 2 int ids .*learner_id map holds str"):
        builder.build([3, 10], log=log, fold=fold, retriever=rec)
    table = builder.build(["L0003", "L0010"], log=log, fold=fold, retriever=rec)
    numbers = table.assign(learner_id=table["learner_id"].str[1:].astype("int64"))
    labels = window_truth(log, fold, seen_in(log, fold.inputs))
    with pytest.raises(TypeError, match=r"candidate_labels: table.learner_id: .*int ids"):
        candidate_labels(numbers, log, labels)
    lists = numbers.assign(rank=table.groupby("learner_id").cumcount() + 1)
    with pytest.raises(TypeError, match=r"list_metrics: lists.learner_id: .*int ids"):
        list_metrics(lists, log, labels)
    stats = rec.score_stats(pd.Index(["L0003", "L0010"]))
    with pytest.raises(TypeError, match=r"add_features: table.learner_id: .*int ids"):
        add_features(
            numbers, stats=stats.assign(learner_id=[3, 10]), log=log,
            popularity=builder.context(log, fold).popularity,
        )  # fmt: skip


def test_a_scorer_trained_after_the_folds_cutoff_is_refused_also_with_a_context(world):
    """A GLMix fitted on events after the window's cutoff has learned its labels; a caller
    passing builder.context(log, fold) skipped every check."""
    from types import SimpleNamespace

    from watchlog.splits import LeakageError

    log, truth, fold = world
    builder = CandidateBuilder(n_retrieve=5, n_fallback=5)
    rec = NoisyTruthRetriever(log, truth)
    late = SimpleNamespace(trained_through=fold.cutoff + pd.Timedelta(days=1))
    context = builder.context(log, fold)
    for ctx in (None, context):
        with pytest.raises(LeakageError, match=r"GLMix scorer .*trained_through.*after the"):
            builder.build(["L0003"], log=log, fold=fold, retriever=rec, scorer=late, context=ctx)
    with pytest.raises(LeakageError, match=r"GLMix scorer"):
        next(builder.chunks(["L0003"], log=log, fold=fold, retriever=rec, scorer=late))
    naive = SimpleNamespace(trained_through=fold.cutoff.tz_localize(None) + pd.Timedelta(hours=1))
    with pytest.raises(LeakageError, match=r"GLMix scorer"):  # a naive time is UTC
        builder.build(["L0003"], log=log, fold=fold, retriever=rec, scorer=naive)
    # trained up to the cutoff (or unknown): checked and served
    on_time = SimpleNamespace(trained_through=fold.cutoff)
    unknown = SimpleNamespace(trained_through=None)
    check = [builder.context(log, fold), builder.context(log, fold)]
    for scorer, ctx in zip((on_time, unknown), check, strict=True):
        ctx.check_serves(rec, scorer, log, fold)
        assert ctx.checked == [(rec, None, scorer)]
    with pytest.raises(ValueError, match=r"context: made for the test fold .*given with the"):
        builder.build(["L0003"], log=log, fold=fold.__class__(**{**vars(fold), "name": "other"}),
                      retriever=rec, context=context)  # fmt: skip


def _toy(n_learners: int = 30, n_courses: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = pd.DataFrame(
        {
            "learner_id": np.repeat(np.arange(n_learners), n_courses),
            "course_id": np.tile(np.arange(n_courses), n_learners),
            "a": rng.normal(size=n_learners * n_courses),
            "b": rng.normal(size=n_learners * n_courses),
        }
    )
    t["segment"] = np.where(t["learner_id"] % 2, "x", "y")
    y = (rng.random(len(t)) < 0.3 + 0.3 * (t["a"] > 0)).astype(int)
    return t, y


def test_a_personalized_blender_refuses_ids_of_another_kind_than_fitted():
    """Text ids against a blender fitted on number ids matched no learner: every learner
    silently lost its own coefficients."""
    t, y = _toy()
    p = PersonalizedBlender(["a", "b"]).fit(t, y)
    text = t.astype({"learner_id": "str"})
    with pytest.raises(TypeError, match=r"score: .*str ids .*fitted on int ids"):
        p.score(text)
    with pytest.raises(TypeError, match=r"known_learners: .*str ids"):
        p.known_learners(text["learner_id"].unique())
    # other number dtypes, and categoricals of numbers, are the same kind: scored alike
    same = t.astype({"learner_id": "int32"})
    np.testing.assert_allclose(p.score(same), p.score(t))
    np.testing.assert_allclose(p.score(t.astype({"learner_id": "category"})), p.score(t))
    assert p.known_learners(np.arange(30)).all()


def test_unfitted_blenders_say_call_fit_first_and_rank_fusion_needs_no_fit():
    """known_learners, coefficients and with_weights of an unfitted blender raised an
    AttributeError from deep inside (model_, mean_)."""
    from sklearn.base import clone

    from blend import LinearBlender, LogisticBlender, RankBlender, RankFusionBlender

    t, y = _toy()
    unfitted = [
        lambda: PersonalizedBlender(["a"]).known_learners([1]),
        lambda: PersonalizedBlender(["a"]).coefficients(),
        lambda: LogisticBlender(["a"]).coefficients(),
        lambda: RankBlender(["a", "b"]).coefficients(),
        lambda: LinearBlender({"a": 1.0}).with_weights([2.0]),
        lambda: PersonalizedBlender(["a"]).score(t),
    ]
    for call in unfitted:
        with pytest.raises(RuntimeError, match=r"Blender is not fitted: call fit first"):
            call()
    # reciprocal-rank fusion learns nothing: unfitted, it scores as fitted
    rrf = RankFusionBlender(["a", "b"])
    np.testing.assert_array_equal(rrf.score(t), clone(rrf).fit(t, y).score(t))
    fitted = LinearBlender({"a": 1.0, "b": 0.5}).fit(t)
    assert fitted.with_weights([2.0, 1.0]).coefficients() == {"a": 2.0, "b": 1.0}


def test_a_route_naming_a_learner_twice_is_refused_with_examples(world):
    """A repeated learner in the routes failed deep in pandas ("cannot reindex on an axis
    with duplicate labels")."""
    log, truth, fold = world
    table = CandidateBuilder(n_retrieve=5, n_fallback=5).build(
        ["L0003", "L0010"], log=log, fold=fold, retriever=NoisyTruthRetriever(log, truth)
    )
    route = pd.Series(["blend", "popular", "two_tower"], index=["L0003", "L0003", "L0010"])
    with pytest.raises(ValueError, match=r"one route per learner; 1 learner ids of 3 routes "
                                         r"are repeated, e.g. \['L0003'\]"):  # fmt: skip
        served_lists(table, "ncf_score", 5, route=route)


def test_blenders_refuse_repeated_pairs_scattered_learners_and_empty_tables():
    from blend import LinearBlender, LogisticBlender, RankBlender, RankFusionBlender

    t, y = _toy()
    repeated = pd.concat([t, t.iloc[[0]]], ignore_index=True)
    scattered = t.iloc[np.r_[0:4, 8:16, 4:8, 16 : len(t)]]  # learner 0's rows split
    blenders = [
        LinearBlender({"a": 1.0, "b": 0.5}), LogisticBlender(["a", "b"]),
        RankBlender(["a", "b"]), PersonalizedBlender(["a", "b"]), RankFusionBlender(["a", "b"]),
    ]  # fmt: skip
    for blender in blenders:
        name = type(blender).__name__
        with pytest.raises(CandidateError, match=rf"{name}.fit: .*pair may appear once"):
            blender.fit(repeated, np.r_[y, 0])
        with pytest.raises(CandidateError, match=rf"{name}.fit: .*contiguous"):
            blender.fit(scattered, np.r_[y, 0])
        with pytest.raises(ValueError, match=rf"{name}.fit: .*no candidates to fit on"):
            blender.fit(t.iloc[:0], y[:0])
    rrf = RankFusionBlender(["a", "b"]).fit(t)
    with pytest.raises(CandidateError, match=r"RankFusionBlender.score: .*pair may appear once"):
        rrf.score(repeated)
    assert rrf.score(t.iloc[:0]).shape == (0,)  # empty: empty scores, not a crash
    # one column given as a name, not a list of its letters
    np.testing.assert_allclose(RankFusionBlender("a").fit(t).score(t),
                               RankFusionBlender(["a"]).fit(t).score(t))  # fmt: skip


def test_candidate_auc_takes_labels_as_a_list_and_checks_their_length():
    from blend.evaluate import candidate_auc

    t, y = _toy(n_learners=4, n_courses=5)
    assert candidate_auc(t, "a", list(y)) == candidate_auc(t, "a", np.asarray(y))
    with pytest.raises(ValueError, match=r"labels: expected shape \(20,\)"):
        candidate_auc(t, "a", list(y)[:-1])
