"""blend: popularity fallback lists, the candidate table, the features, the served lists."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from blend import (
    CandidateBuilder,
    ItemItem,
    LearnerLearner,
    Popularity,
    add_features,
    build_candidates,
    routes,
    seen_before,
    served_lists,
    top_k,
)
from blend.candidates import seen_in
from blend.features import zscore_within_learner
from tests.blend_fakes import NoisyTruthRetriever
from watchlog.candidates import validate_candidates
from watchlog.cleaning import clean
from watchlog.splits import temporal_split


@pytest.fixture(scope="module")
def world(small_platform):
    log = clean(small_platform.log)
    split = temporal_split(log, valid_days=30, test_days=30, blend_days=30)
    cutoff = split.blend.cutoff
    return log, small_platform.truth, split, cutoff


def test_popularity_counts_only_watches_before_the_cutoff(world):
    log, _, _, cutoff = world
    pop = Popularity.at(log, cutoff, lookback_days=60)
    ev = log.events
    w = ev[ev["watched"] & (ev["ts"] < cutoff) & (ev["ts"] >= cutoff - pd.Timedelta(days=60))]
    expect = np.bincount(w["course_idx"], minlength=log.n_courses)
    np.testing.assert_array_equal(pop.count, expect)
    # per group: the learners' (segment, language) groups partition the counts
    assert pop.group_count.sum() == len(w)
    np.testing.assert_allclose(pop.log_count, np.log1p(expect))


def test_fallback_lists_prefer_the_group_skip_watched_and_fill_from_global(world):
    log, _, _, cutoff = world
    pop = Popularity.at(log, cutoff, lookback_days=60)
    seen = seen_before(log, cutoff)
    learners = np.array([0, 1, 2, -1])  # -1: not in the learner table
    fb = pop.fallback_pairs(learners, k=15, exclude=seen)
    for pos, li in enumerate(learners):
        mine = fb[fb["learner"] == pos]
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        assert len(mine) == 15 and mine["course_idx"].is_unique
        if li < 0:
            assert set(mine["source"]) == {"popular_global"}
            top = np.argsort(-pop.count, kind="stable")[:15]
            assert mine["course_idx"].tolist() == top.tolist()
            continue
        assert not seen[li, mine["course_idx"].to_numpy()].toarray().any()
        group = pop.group_of[li]
        seg = mine[mine["source"] == "popular_segment"]["course_idx"].to_numpy()
        counts = pop.group_count[group, seg]
        assert (np.diff(counts) <= 0).all()  # most watched in the group first
        # the group list comes before any global filler
        src = mine["source"].tolist()
        assert src == sorted(src, key=lambda s: s != "popular_segment")


def _fallback_by_hand(pop, li, k, exclude, allowed):
    """One learner's fallback list the slow, obvious way: its group's courses by count, then
    the global ones, skipping excluded, not allowed, unwatched and repeated courses."""
    skip = set(exclude[li].indices) if li >= 0 else set()
    out: list[tuple[int, str]] = []
    group = pop.group_of[li] if li >= 0 else -1
    lists = [(pop.count * allowed, "popular_global")]
    if group >= 0:
        lists.insert(0, (pop.group_count[group] * allowed, "popular_segment"))
    for counts, source in lists:
        for c in np.argsort(-counts, kind="stable"):
            if counts[c] > 0 and c not in skip and c not in {o[0] for o in out}:
                out.append((int(c), source))
    return out[:k]


def _random_popularity(rng, n_learners, n_courses, n_groups):
    group_count = rng.integers(0, 4, (n_groups, n_courses)) * (
        rng.random((n_groups, n_courses)) < 0.4
    )
    return Popularity(
        group_count.sum(axis=0) + rng.integers(0, 2, n_courses), rng.integers(-1, n_groups, n_learners),
        group_count.astype(float), pd.DataFrame(index=range(n_groups)), pd.Timestamp("2024-01-01", tz="UTC"),
    )  # fmt: skip


def test_fallback_lists_match_a_list_built_by_hand_for_light_and_heavy_learners():
    """Each learner reads k + its own watched count of each list: enough when its group list
    runs out and the global list repeats the group's courses (few courses, many watched)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    for trial in range(6):
        n_learners, n_courses = 60, int(rng.integers(5, 40))
        pop = _random_popularity(rng, n_learners, n_courses, n_groups=3)
        exclude = sp.random(n_learners, n_courses, density=0.1 * trial, random_state=trial)
        exclude = exclude.tocsr()
        allowed = rng.random(n_courses) > 0.2
        learners = np.r_[rng.permutation(n_learners)[:25], -1]
        k = int(rng.integers(1, 12))
        fb = pop.fallback_pairs(learners, k, exclude=exclude, allowed=allowed)
        for pos, li in enumerate(learners):
            mine = fb[fb["learner"] == pos]
            assert list(zip(mine["course_idx"], mine["source"], strict=True)) == _fallback_by_hand(
                pop, li, k, exclude, allowed
            )
            assert mine["rank"].tolist() == list(range(1, len(mine) + 1))


def test_fallback_memory_follows_the_chunk_not_the_heaviest_learner_nor_the_whole_log():
    """A chunk's lists read the chunk's rows of the watched matrix and k + each learner's own
    watched count per list: one learner with 1,500 watched courses made every learner's
    arrays that long, and every chunk indexed all 50,000 learners' watches (173 MiB)."""
    import tracemalloc

    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n_learners, n_courses = 50_000, 2_000
    pop = _random_popularity(rng, n_learners, n_courses, n_groups=10)
    rows = np.r_[np.repeat(np.arange(n_learners), 20), np.zeros(1_500, dtype=np.int64)]
    cols = np.r_[rng.integers(0, n_courses, n_learners * 20), rng.permutation(n_courses)[:1_500]]
    seen = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_learners, n_courses))
    seen.sum_duplicates()
    tracemalloc.start()
    try:
        fb = pop.fallback_pairs(np.arange(500), 20, exclude=seen)  # learner 0 is the heavy one
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert (fb.groupby("learner").size() == 20).all()
    assert not seen[0, fb.loc[fb["learner"] == 0, "course_idx"].to_numpy()].toarray().any()


def test_candidates_join_retrieval_and_fallback_on_the_callers_ids(world):
    log, truth, _, cutoff = world
    ret = NoisyTruthRetriever(log, truth)
    seen, pop = seen_before(log, cutoff), Popularity.at(log, cutoff)
    ids = pd.Index(["L0003", "L0010", "L0042", "nobody"])
    table = build_candidates(
        ids, ret, log=log, seen=seen, popularity=pop, n_retrieve=30, n_fallback=10
    )
    validate_candidates(table, score_columns=["ncf_score"])
    assert table["learner_id"].unique().tolist() == ids.tolist()  # learner order kept
    for lid in ids:
        mine = table[table["learner_id"] == lid]
        r = mine[mine["retrieved"]]
        assert r["ncf_rank"].tolist() == list(range(1, 31))
        assert (mine.loc[~mine["retrieved"], "ncf_rank"] == 31).all()
        assert mine["fallback_rank"].notna().sum() == 10
    # fallback-only pairs are scored by the retriever too
    extra = table[~table["retrieved"]]
    np.testing.assert_allclose(
        extra["ncf_score"], ret.score(extra["learner_id"], extra["course_id"]), rtol=1e-6
    )
    assert (table[table["learner_id"] == "nobody"]["fallback_source"]
            .replace("", np.nan).dropna() == "popular_global").all()  # fmt: skip


def test_features_normalize_the_two_tower_score_per_learner(world):
    log, truth, split, cutoff = world
    fold = split.blend
    ret = NoisyTruthRetriever(log, truth)
    builder = CandidateBuilder(n_retrieve=20, n_fallback=5)
    ids = pd.Index(["L0003", "L0010"])
    table = builder.build(ids, log=log, fold=fold, retriever=ret)
    stats = ret.score_stats(ids).set_index("learner_id")
    row = table.iloc[0]
    s = stats.loc[row["learner_id"]]
    assert row["ncf_z"] == pytest.approx((row["ncf_score"] - s["ncf_mean"]) / s["ncf_std"])
    assert row["ncf_log_softmax"] == pytest.approx(row["ncf_score"] - s["ncf_logsumexp"])
    np.testing.assert_allclose(table["retrieval_rank"], np.log(table["ncf_rank"]))
    course = log.course_ids.to_index(table["course_id"])
    published = pd.to_datetime(log.courses["published_at"], utc=True).iloc[course]
    days = np.maximum(((cutoff - published) / pd.Timedelta(days=1)).to_numpy(), 0)
    np.testing.assert_allclose(table["course_age"], np.log1p(days), rtol=1e-6)
    seg = log.learners.set_index("learner_id").loc[table["learner_id"], "segment"]
    assert (table["segment"].to_numpy() == seg.to_numpy()).all()
    assert table["has_history"].all() and table["known_to_glmix"].all()


def test_closed_form_features_score_each_candidate_from_the_folds_inputs(world):
    log, truth, split, _ = world
    fold = split.blend
    ret = NoisyTruthRetriever(log, truth)
    ids = pd.Index(["L0003", "L0010", "nobody"])
    plain = CandidateBuilder(n_retrieve=20, n_fallback=5, item_item=None)
    table = plain.build(ids, log=log, fold=fold, retriever=ret)
    assert not {"ease_z", "learner_ease_z"} & set(table.columns)  # both off
    builder = CandidateBuilder(
        n_retrieve=20, n_fallback=5, item_item=ItemItem(l2=50.0, rank=64),
        learner_learner=LearnerLearner(l2=50.0, rank=64),
    )  # fmt: skip
    table = builder.build(ids, log=log, fold=fold, retriever=ret)
    seen = seen_in(log, fold.inputs)  # what the learners had watched before the window
    li = log.learner_ids.to_index(table["learner_id"], strict=False)
    ci = log.course_ids.to_index(table["course_id"])
    for column, model in (("ease", ItemItem(l2=50.0, rank=64)),
                          ("learner_ease", LearnerLearner(l2=50.0, rank=64))):  # fmt: skip
        expected = model.fit(seen).score_pairs(seen, li, ci)
        np.testing.assert_allclose(table[f"{column}_score"], expected, rtol=1e-6)
        np.testing.assert_allclose(
            table[f"{column}_z"], zscore_within_learner(table, f"{column}_score")
        )
        known = table["learner_id"] != "nobody"
        assert table.loc[known, f"{column}_z"].std() > 0.5
        assert (table.loc[~known, f"{column}_score"] == 0).all()  # unknown to the log: 0
    assert not np.allclose(table["ease_z"], table["learner_ease_z"])


def test_add_features_needs_stats_for_every_learner(world):
    log, truth, _, cutoff = world
    ret = NoisyTruthRetriever(log, truth)
    seen, pop = seen_before(log, cutoff), Popularity.at(log, cutoff)
    table = build_candidates(["L0003"], ret, log=log, seen=seen, popularity=pop, n_retrieve=5)
    with pytest.raises(KeyError, match="no two-tower statistics for learners"):
        add_features(table, stats=ret.score_stats(["L0010"]), log=log, popularity=pop)


def test_served_lists_follow_the_fallback_chain_and_never_increase(world):
    log, truth, split, cutoff = world
    fold = split.blend
    ret = NoisyTruthRetriever(log, truth, no_history=["L0042"])
    builder = CandidateBuilder(n_retrieve=6, n_fallback=8)
    ids = pd.Index(["L0003", "L0010", "L0042", "nobody"])
    table = builder.build(ids, log=log, fold=fold, retriever=ret)
    table["blend_score"] = -table["ncf_score"]  # a blender that reverses the two-tower
    route = pd.Series(
        routes(ids, has_history=np.array([1, 1, 0, 0], bool),
               known_to_glmix=np.array([1, 0, 1, 0], bool)),
        index=ids,
    )  # fmt: skip
    assert route.tolist() == ["blend", "two_tower", "popular", "popular"]
    lists = served_lists(table, "blend_score", 10, route=route)
    for lid, mine in lists.groupby("learner_id", sort=False):
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        assert (np.diff(mine["score"].to_numpy()) <= 0).all(), lid
        assert mine["course_id"].is_unique
    blend = lists[lists["learner_id"] == "L0003"]
    assert len(blend) == 10 and set(blend["source"]) == {"blend"}  # 6 + 8 candidates >= 10
    cand = table[table["learner_id"] == "L0003"]
    assert blend["course_id"].tolist() == cand.nsmallest(10, "ncf_score")["course_id"].tolist()
    tt = lists[lists["learner_id"] == "L0010"]
    # only 6 retrieved pairs: the two-tower's order, then fallback filler
    assert tt["source"].tolist()[:6] == ["two_tower"] * 6
    assert set(tt["source"].tolist()[6:]) <= {"popular_segment", "popular_global"}
    assert (
        tt["course_id"].tolist()[:6]
        == (cand_tt := table[(table["learner_id"] == "L0010") & table["retrieved"]])
        .sort_values("ncf_rank")["course_id"]
        .tolist()
    )
    del cand_tt
    pop = lists[lists["learner_id"] == "L0042"]
    assert set(pop["source"]) <= {"popular_segment", "popular_global"} and len(pop) == 8
    assert set(lists[lists["learner_id"] == "nobody"]["source"]) == {"popular_global"}


def test_top_k_takes_each_learners_best_rows():
    t = pd.DataFrame(
        {
            "learner_id": pd.array(["a"] * 4 + ["b"] * 2, dtype="str"),
            "course_id": np.arange(6),
            "s": [0.1, 0.9, 0.5, 0.7, 0.2, 0.3],
        }
    )
    top = top_k(t, "s", 3)
    assert top["course_id"].tolist() == [1, 3, 2, 5, 4]
    assert top["rank"].tolist() == [1, 2, 3, 1, 2]


def test_ties_go_to_the_lower_course_id_whatever_the_row_order(world):
    """The candidate table comes in the two-tower's order; a tied score must not inherit it:
    a constant scorer judged on the table reversed per learner gets the same lists."""
    t = pd.DataFrame(
        {
            "learner_id": pd.array(["a"] * 4 + ["b"] * 3, dtype="str"),
            "course_id": pd.array(["c9", "c2", "c5", "c7", "c3", "c1", "c8"], dtype="str"),
            "s": [1.0, 1.0, 2.0, 1.0, 0.0, 0.0, 0.0],
        }
    )
    top = top_k(t, "s", 3)
    assert top["course_id"].tolist() == ["c5", "c2", "c7", "c1", "c3", "c8"]
    flipped = t.iloc[[3, 2, 1, 0, 6, 5, 4]].reset_index(drop=True)
    pd.testing.assert_frame_equal(top_k(flipped, "s", 3), top)
    # the served lists too, through the fallback chain
    log, truth, split, cutoff = world
    learners = log.learner_ids.index[:30]
    table = CandidateBuilder(n_retrieve=10, n_fallback=5).build(
        learners, log=log, fold=split.blend, retriever=NoisyTruthRetriever(log, truth)
    )
    table["flat"] = 0.0  # every candidate tied
    route = pd.Series("blend", index=learners)
    served = served_lists(table, "flat", 5, route=route)
    group = pd.factorize(table["learner_id"])[0]
    reversed_rows = np.lexsort((-np.arange(len(table)), group))  # each learner's rows reversed
    again = served_lists(table.iloc[reversed_rows].reset_index(drop=True), "flat", 5, route=route)
    pd.testing.assert_frame_equal(served, again)


def test_served_lists_refuse_unknown_routes(world):
    log, truth, split, cutoff = world
    fold = split.blend
    table = CandidateBuilder(n_retrieve=3, n_fallback=2).build(
        ["L0003"], log=log, fold=fold, retriever=NoisyTruthRetriever(log, truth)
    )
    with pytest.raises(KeyError, match="no route for learners"):
        served_lists(table, "ncf_score", 3, route=pd.Series(dtype=object))
    with pytest.raises(ValueError, match="must be one of"):
        served_lists(table, "ncf_score", 3, route=pd.Series({"L0003": "magic"}))


def test_fallback_lists_skip_courses_not_allowed_and_fill_from_the_next(world):
    log, _, _, cutoff = world
    pop = Popularity.at(log, cutoff, lookback_days=60)
    learners = np.array([-1])  # the global list only
    top = np.argsort(-pop.count, kind="stable")[:6]
    allowed = np.ones(log.n_courses, dtype=bool)
    allowed[top[[0, 2]]] = False  # e.g. courses a model cannot score
    fb = pop.fallback_pairs(learners, k=4, allowed=allowed)
    assert fb["course_idx"].tolist() == top[[1, 3, 4, 5]].tolist()
    with pytest.raises(ValueError, match="allowed: .* bool, one per course"):
        pop.fallback_pairs(learners, k=4, allowed=allowed[:-1])


def test_a_learner_left_without_candidates_is_counted_and_named(world, caplog):
    log, truth, _, cutoff = world
    ids = pd.Index(["L0003", "L0010", "L0042"])

    class SkipsOne(NoisyTruthRetriever):  # returns nothing for L0010
        def recommend_table(self, learner_ids, N, *, filter_already_watched=True):
            t = super().recommend_table(learner_ids, N)
            return t[t["learner_id"] != "L0010"].reset_index(drop=True)

    pop = Popularity.at(log, cutoff, lookback_days=1e-4)  # no watch in the window: no fallback
    with caplog.at_level("WARNING", logger="blend.candidates"):
        table = build_candidates(
            ids, SkipsOne(log, truth), log=log, seen=seen_before(log, cutoff), popularity=pop,
            n_retrieve=5, n_fallback=5,
        )  # fmt: skip
    assert table["learner_id"].unique().tolist() == ["L0003", "L0042"]
    assert table.attrs["learners_without_candidates"] == 1
    assert "1 of 3 learners have none" in caplog.text and "L0010" in caplog.text


def test_served_lists_and_judged_points_refuse_tables_that_break_the_contract(world):
    from blend import LabelledPoint
    from blend.evaluate import window_truth
    from watchlog.candidates import CandidateError

    log, truth, split, cutoff = world
    table = build_candidates(
        pd.Index(["L0003", "L0010"]), NoisyTruthRetriever(log, truth), log=log,
        seen=seen_before(log, cutoff), popularity=Popularity.at(log, cutoff), n_retrieve=5,
        n_fallback=2,
    ).assign(s=1.0)  # fmt: skip
    route = pd.Series("blend", index=["L0003", "L0010"])
    twice = pd.concat([table, table.iloc[:1]], ignore_index=True)  # a pair repeated, at the end
    split_learner = pd.concat([table, table.iloc[[0]].assign(course_id="C0999")], ignore_index=True)
    for bad, rule in ((twice, "may appear once"), (split_learner, "must be contiguous")):
        with pytest.raises(CandidateError, match=rule):
            served_lists(bad, "s", 3, route=route)
        with pytest.raises(CandidateError, match=rule):
            LabelledPoint.from_table(
                bad, log, window_truth(log, split.blend, seen_before(log, cutoff))
            )


def test_group_columns_the_learners_lack_are_named_and_a_naive_cutoff_is_utc(world, caplog):
    log, truth, split, cutoff = world
    with caplog.at_level(logging.WARNING, logger="blend.popularity"):
        pop = Popularity.at(log, cutoff, group_columns=("segment", "langauge"))
    assert "['langauge'] are not in the learner table" in caplog.text
    assert list(pop.groups.columns) == ["segment"]
    naive = Popularity.at(log, cutoff.tz_convert("UTC").tz_localize(None))
    assert naive.cutoff == cutoff
    np.testing.assert_array_equal(naive.count, Popularity.at(log, cutoff).count)


def test_chunks_refuse_a_learner_asked_for_twice(world):
    log, truth, split, cutoff = world
    ids = list(log.learner_ids.index[:3])
    builder = CandidateBuilder(n_retrieve=5, n_fallback=3)
    with pytest.raises(ValueError, match=r"learner_ids: 1 repeated ids"):
        list(builder.chunks([*ids, ids[0]], log=log, fold=split.test,
                            retriever=NoisyTruthRetriever(log, truth), learners_per_chunk=2))  # fmt: skip
