"""Serving the two-tower: `NCFRecommender.at` (histories up to a later cutoff, other id maps),
`score`, `score_table`, `recommend_table` (the long candidate table), `score_stats`, input
settings in saved folders (format_version 2, old folders), and `fit(..., split=...)`.

One tiny model is trained once (module scope, about a second on `synthetic_small`); models
for the rules that need another architecture (learner ID embeddings, cosine score) are
random-initialised: serving does not care how good the weights are."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from hydra import compose, initialize_config_dir
from scipy.special import logsumexp

from experiments.train_ncf import fit
from ncf.inputs import InputBuilder
from ncf.model import TwoTower
from ncf.recommender import FORMAT_VERSION, NCFRecommender
from watchlog.candidates import CandidateError, validate_candidates
from watchlog.eventlog import EventLog
from watchlog.idmap import IdMap, UnknownIdError
from watchlog.splits import temporal_split

ROOT = Path(__file__).resolve().parents[1]
DAY = pd.Timedelta(days=1)
NEW_LEARNER, NEW_COURSE = "A-new-learner", "A-new-course"  # sort first: every index shifts


def compose_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train_ncf",
            overrides=[
                "data=synthetic_small", f"paths.output_dir={tmp_path}", "trainer.max_epochs=2",
                "trainer.enable_progress_bar=false", "outputs.plots=false", "ncf.refit=false",
                *overrides,
            ],
        )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ncf_serving")
    return fit(compose_cfg(out), out_dir=out)


@pytest.fixture(scope="module")
def rec(trained):
    return trained.recommender


@pytest.fixture(scope="module")
def log(trained):
    return trained.data.log


def copy_of(rec: NCFRecommender, **changes) -> NCFRecommender:
    """The same model and snapshot with other serving options (fixtures stay untouched)."""
    kwargs = dict(
        inputs=rec.inputs, content=rec.content, normalize=rec.normalize,
        cold_start=rec.cold_start, device="cpu", chunk_size=rec.chunk_size,
    )  # fmt: skip
    return NCFRecommender(
        rec.model, rec.snapshot, rec.learner_ids, rec.course_ids, **{**kwargs, **changes}
    )


def same_snapshot(a, b) -> None:
    for part in ("history", "seen", "course_bags"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.shape == y.shape, part
        assert (x != y).nnz == 0, part


def other_ids(log: EventLog, when: pd.Timestamp, *, new_course: bool = True) -> EventLog:
    """`log` plus a new learner (who watches three known courses and, with `new_course`, a
    new course) and the first 15 learners who watched course 3 watching the new course too
    (so it would be a strong co-watch neighbour of course 3), all at `when`. The new ids sort
    first, so every dense index of the result differs from `log`'s."""
    ev = log.events.drop(columns=["learner_idx", "course_idx"])
    ev = ev.assign(
        learner_id=ev["learner_id"].astype("string"), course_id=ev["course_id"].astype("string")
    )
    template = ev[ev["watched"]].iloc[[0]]
    known = log.course_ids.index[[3, 40, 77]].tolist()
    pairs = [(NEW_LEARNER, c) for c in known]
    if new_course:
        pairs += [(NEW_LEARNER, NEW_COURSE)] + [(f, NEW_COURSE) for f in fans_of_course_3(log)]
    extra = pd.concat([template] * len(pairs), ignore_index=True)
    extra["learner_id"] = pd.array([p[0] for p in pairs], dtype="string")
    extra["course_id"] = pd.array([p[1] for p in pairs], dtype="string")
    extra["ts"] = pd.Series([when] * len(pairs), dtype=ev["ts"].dtype)
    events = pd.concat([ev, extra], ignore_index=True)
    events = events.iloc[np.argsort(events["ts"].to_numpy(), kind="stable")].reset_index(drop=True)
    learners = pd.concat(
        [log.learners, pd.DataFrame({"learner_id": pd.array([NEW_LEARNER], dtype="string")})],
        ignore_index=True,
    )
    courses = log.courses
    if new_course:
        new = pd.DataFrame({"course_id": pd.array([NEW_COURSE], dtype="string")})
        courses = pd.concat([courses, new], ignore_index=True)
    learner_ids = IdMap(learners["learner_id"], "learner_id")
    course_ids = IdMap(courses["course_id"], "course_id")
    learners = learners.iloc[learner_ids.to_index(learners["learner_id"]).argsort()]
    courses = courses.iloc[course_ids.to_index(courses["course_id"]).argsort()]
    events = events.assign(
        learner_idx=learner_ids.to_index(events["learner_id"]),
        course_idx=course_ids.to_index(events["course_id"]),
    )
    return EventLog(
        events, learners.reset_index(drop=True), courses.reset_index(drop=True),
        learner_ids, course_ids,
    )  # fmt: skip


def fans_of_course_3(log: EventLog) -> list:
    ev = log.events[log.events["watched"].to_numpy() & (log.events["course_idx"] == 3).to_numpy()]
    return log.learner_ids.to_ids(pd.unique(ev["learner_idx"].to_numpy())[:15]).tolist()


# ---- at(): the same cutoff, a later one, an earlier one -------------------------------------
def test_at_the_models_own_cutoff_reproduces_the_recommender_exactly(rec, log):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped: no warning either
        again = rec.at(log, rec.snapshot.cutoff)
    assert again.model is rec.model and again.inputs is rec.inputs
    same_snapshot(again.snapshot, rec.snapshot)
    learners = rec.learner_ids.index
    a, b = rec.recommend(learners, N=15), again.recommend(learners, N=15)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    report = again.serving_report
    assert report["unknown_courses"] == report["unknown_course_watches"] == 0
    assert report["new_learners"] == report["model_courses_not_in_log"] == 0
    assert report["cutoff"] == report["model_cutoff"] == str(rec.snapshot.cutoff)


def test_at_a_later_cutoff_serves_the_history_watched_since(rec, log):
    T = rec.snapshot.cutoff
    later = rec.at(log, T + 20 * DAY)
    assert later.snapshot.cutoff == T + 20 * DAY and later.model_cutoff == T
    ev = log.events[log.events["watched"].to_numpy()]
    window = ev[(ev["ts"] >= T) & (ev["ts"] < T + 20 * DAY)]
    new_pairs = [
        (lrn, crs)
        for lrn, crs in zip(window["learner_idx"], window["course_idx"], strict=True)
        if rec.snapshot.seen[lrn, crs] == 0
    ]
    assert new_pairs, "the fixture's log has watches after the model's cutoff"
    learner, course = (int(x) for x in new_pairs[0])
    assert later.snapshot.seen[learner, course] == 1 and later.snapshot.history[learner, course] > 0
    lid, cid = rec.learner_ids.to_ids([learner])[0], rec.course_ids.to_ids([course])[0]
    n = len(rec.course_ids)
    before, _ = rec.recommend([lid], N=n)
    after, _ = later.recommend([lid], N=n)
    assert cid in before[0] and cid not in after[0]  # watched after T: excluded at T' only
    # the history at T' changed the learner's embedding, so its scores too
    assert not np.allclose(rec.score([lid], [cid]), later.score([lid], [cid]))


def test_at_checks_the_cutoff(rec, log):
    T = rec.snapshot.cutoff
    with pytest.raises(ValueError, match="before the model's training cutoff"):
        rec.at(log, T - DAY)
    earlier = rec.at(log, T - 10 * DAY, allow_earlier=True)
    assert earlier.snapshot.cutoff == T - 10 * DAY
    naive = rec.at(log, T.tz_localize(None) + DAY)  # a naive timestamp is read as UTC
    assert naive.snapshot.cutoff == T + DAY
    assert rec.at(log, str((T + DAY).date())).snapshot.cutoff == T + DAY
    with pytest.raises(TypeError, match="cutoff: must be a timestamp"):
        rec.at(log, 1_700_000_000)
    with pytest.raises(ValueError, match="cutoff: 'soon' is not a parseable timestamp"):
        rec.at(log, "soon")
    with pytest.raises(ValueError, match="needs a cleaned log"):
        rec.at(log.with_events(log.events.drop(columns="watched")), T)


def with_int_ids(log: EventLog, *, learners: bool, courses: bool) -> EventLog:
    """`log` with its learner and/or course ids replaced by their dense indices (integers)."""
    events, tables, maps = log.events, {}, {}
    for side, table, on in (("learner", log.learners, learners), ("course", log.courses, courses)):
        ids = getattr(log, f"{side}_ids")
        if on:
            events = events.assign(**{f"{side}_id": events[f"{side}_idx"].astype(np.int64)})
            table = table.assign(
                **{f"{side}_id": ids.to_index(table[f"{side}_id"]).astype(np.int64)}
            )
            ids = IdMap(np.arange(len(ids), dtype=np.int64), f"{side}_id")
        tables[side], maps[side] = table, ids
    return EventLog(events, tables["learner"], tables["course"], maps["learner"], maps["course"])


def test_at_refuses_a_log_whose_ids_are_of_another_kind(rec, log):
    """Integer learner ids in the log against the model's text ids: every learner was served
    as new since training (from its history, with a serving_report of 100% new learners);
    integer course ids: a ValueError that only said none was known."""
    T = rec.snapshot.cutoff + DAY
    with pytest.raises(TypeError, match=r"log.learner_ids: [\d,]+ int ids \(dtype int64, e.g. "
                                        r"\[0, 1, 2\]\), but the learner_id map holds str ids"):  # fmt: skip
        rec.at(with_int_ids(log, learners=True, courses=False), T)
    with pytest.raises(TypeError, match=r"log.course_ids: [\d,]+ int ids .* course_id map holds "
                                        r"str ids \(dtype \w+, e.g. \['C"):  # fmt: skip
        rec.at(with_int_ids(log, learners=False, courses=True), T)
    rec.at(log, T)  # the same kinds: served


def test_at_maps_other_ids_drops_unknown_courses_and_serves_new_learners(rec, log):
    # Three co-watch neighbours per course (the fixture's 50 are never all filled here), so a
    # new course left in the co-watch computation would push a known neighbour out.
    rec = copy_of(rec, inputs=InputBuilder(**{**rec.inputs.config, "cowatch_top_k": 3}))
    T2 = rec.snapshot.cutoff + 20 * DAY
    log2 = other_ids(log, T2 - 5 * DAY)
    assert log2.course_ids.to_index([log.course_ids.index[0]])[0] == 1  # indices shifted
    lost = 1 + len(fans_of_course_3(log))  # watches of the new course
    assert lost > 5
    with pytest.warns(UserWarning, match=rf"{lost} of .* watches .* 1 courses the model does not"):
        served = rec.at(log2, T2)
    report = served.serving_report
    assert report["unknown_courses"] == 1 and report["unknown_course_examples"] == [NEW_COURSE]
    assert report["unknown_course_watches"] == lost and report["new_learners"] == 1
    assert served.course_ids is rec.course_ids and served.learner_ids == log2.learner_ids

    # The same log without the new course (so no course remap at all) gives the same inputs:
    # the remap is right and the unknown course never took a co-watch neighbour's slot.
    reference = rec.at(other_ids(log, T2 - 5 * DAY, new_course=False), T2)
    same_snapshot(served.snapshot, reference.snapshot)
    learners = [NEW_LEARNER, *log.learner_ids.index[:30]]
    np.testing.assert_array_equal(served.recommend(learners)[1], reference.recommend(learners)[1])

    # The new learner is served from its history: its three courses are seen and excluded.
    watched = log.course_ids.index[[3, 40, 77]].tolist()
    row = served.learner_ids.to_index([NEW_LEARNER])[0]
    assert sorted(rec.course_ids.to_ids(served.snapshot.seen[row].indices)) == sorted(watched)
    ids, _ = served.recommend([NEW_LEARNER], N=len(rec.course_ids))
    assert not set(watched) & set(ids[0][ids[0] != None])  # noqa: E711
    with pytest.raises(UnknownIdError, match="course_ids: 1 of 1 ids are unknown"):
        served.score([NEW_LEARNER], [NEW_COURSE])


def test_candidates_at_a_newer_log_leave_out_popular_courses_the_model_never_saw(rec, log, caplog):
    """Serving a log newer than the model: the new course is the most watched of the window,
    so it tops every fallback list; the two-tower cannot score it, so the candidates leave it
    out (the next most watched takes its place), count it and warn, instead of raising
    UnknownIdError in the middle of a batch."""
    from blend import Popularity, build_candidates, seen_before

    T2 = rec.snapshot.cutoff + 20 * DAY
    log2 = other_ids(log, T2 - 5 * DAY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # at()'s own warning: tested above
        served = rec.at(log2, T2)
    pop = Popularity.at(log2, T2, lookback_days=10)  # the new course's 16 watches, and few else
    new = log2.course_ids.to_index([NEW_COURSE])[0]
    assert pop.count[new] == pop.count.max() > 0  # so every fallback list would start with it
    learners = [NEW_LEARNER, *log.learner_ids.index[:20]]
    with caplog.at_level("WARNING", logger="blend.candidates"):
        table = build_candidates(
            learners, served, log=log2, seen=seen_before(log2, T2), popularity=pop,
            n_retrieve=5, n_fallback=3,
        )  # fmt: skip
    assert NEW_COURSE not in set(table["course_id"])
    assert table.attrs["fallback_courses_unscorable"] == 1
    assert "1 courses watched in the popularity window are unknown" in caplog.text
    assert NEW_COURSE in caplog.text
    # the fallback lists still hold n_fallback courses each where enough were watched
    fb = table[table["fallback_rank"].notna()].groupby("learner_id")["fallback_rank"].max()
    watched_known = int(((pop.count > 0) & (np.arange(log2.n_courses) != new)).sum())
    assert fb.min() == min(3, watched_known - 3)  # at worst the 3 watched courses excluded
    assert np.isfinite(table["ncf_score"]).all()

    # The blend's builder (what the served lists use) keeps the count on its scored chunks.
    from blend import CandidateBuilder
    from watchlog.splits import Fold

    inputs = log2.events[log2.events["ts"] < T2]
    fold = Fold("serve", "temporal", inputs, inputs.iloc[:0], T2, T2)
    builder = CandidateBuilder(n_retrieve=5, n_fallback=3, popularity_days=10)
    chunk = builder.build(learners, log=log2, fold=fold, retriever=served)
    assert NEW_COURSE not in set(chunk["course_id"])
    assert chunk.attrs["fallback_courses_unscorable"] == 1
    strict = copy_of(served, cold_start="error")  # a library user's default recommender
    with pytest.raises(UnknownIdError, match=r"1 of 2 ids are unknown.*cold_start='empty_history'"):
        builder.build(["ghost", learners[1]], log=log2, fold=fold, retriever=strict)


def test_at_with_learner_id_embeddings_keeps_the_id_rows_and_adds_new_learners(rec, log):
    """With learner ID embeddings the model's learners keep their ID rows (at the same
    indices) and the log's new learner follows them, served from its history with a zero ID
    vector (no watch of it is lost, so no warning about it); an id in neither the model nor
    the log is unknown (UnknownIdError; under empty_history the cold-start list)."""
    torch.manual_seed(0)
    model = TwoTower(len(rec.learner_ids), len(rec.course_ids), bag_dim=16, mlp=[8],
                     learner_ids=True)  # fmt: skip
    T = rec.snapshot.cutoff
    ids_rec = NCFRecommender(
        model, rec.inputs.inference_snapshot(log, T), log.learner_ids, log.course_ids,
        inputs=rec.inputs, device="cpu",
    )  # fmt: skip
    log2 = other_ids(log, T + 5 * DAY)
    with pytest.warns(UserWarning, match="courses the model does not know") as caught:
        served = ids_rec.at(log2, T + 10 * DAY)
    assert not any("learner" in str(w.message) for w in caught)
    n = len(ids_rec.learner_ids)
    assert served.learner_ids.index[:n].equals(ids_rec.learner_ids.index)  # ID rows kept
    assert served.learner_ids.to_index([NEW_LEARNER]).tolist() == [n]  # after them, not sorted
    report = served.serving_report
    assert report["new_learners"] == 1 and report["new_learner_examples"] == [NEW_LEARNER]
    assert report["new_learner_watches"] == 4 and report["model_learners_not_in_log"] == 0
    assert "unknown_learners" not in report
    served.recommend([log.learner_ids.index[0], NEW_LEARNER])  # a learner of the log now
    with pytest.raises(UnknownIdError, match="learner_ids: 1 of 2 ids are unknown"):
        served.recommend([log.learner_ids.index[0], "nobody"])
    with pytest.warns(UserWarning, match="courses the model does not know"):
        without_ids = rec.at(log2, T + 10 * DAY)  # same inputs, the log's learners
    assert (served.snapshot.course_bags != without_ids.snapshot.course_bags).nnz == 0
    # the new learner's history is the one a model without ID embeddings serves it from
    a = served.snapshot.history[n]
    b = without_ids.snapshot.history[without_ids.learner_ids.to_index([NEW_LEARNER])[0]]
    assert a.nnz == 3 and (a != b).nnz == 0  # its 3 known courses (the new one left out)
    cold = copy_of(served, cold_start="empty_history")  # "nobody": the cold-start vector
    course = [log.course_ids.index[0]] * 2
    s = cold.score([NEW_LEARNER, "nobody"], course)
    assert np.isfinite(s).all() and s[0] != s[1]  # tests/test_ncf_id_serving.py has the rest
    # a known learner's history rows moved to the model's index
    known = log.learner_ids.index[5]
    a = served.snapshot.seen[served.learner_ids.to_index([known])[0]]
    b = without_ids.snapshot.seen[without_ids.learner_ids.to_index([known])[0]]
    assert (a != b).nnz == 0


# ---- score, recommend_table, score_stats -----------------------------------------------------
def test_score_equals_the_scores_recommend_ranks_by(rec):
    learners = rec.learner_ids.index[:40].to_numpy()
    ids, scores = rec.recommend(learners, N=12)
    rng = np.random.default_rng(0)
    order = rng.permutation(ids.size)  # pairs in any order, learners repeated and interleaved
    pl, pc = np.repeat(learners, 12)[order], ids.ravel()[order]
    small = copy_of(rec, chunk_size=7)  # several chunks of learners
    for r in (rec, small):
        np.testing.assert_allclose(r.score(pl, pc), scores.ravel()[order], rtol=1e-6, atol=1e-6)
    assert rec.score(pl, pc).dtype == np.float32 and rec.score([], []).shape == (0,)


def test_score_bad_inputs_and_cold_start(rec):
    lid, cid = rec.learner_ids.index[:3].tolist(), rec.course_ids.index[:3].tolist()
    with pytest.raises(ValueError, match="the same length; got 3 learner ids and 2 course ids"):
        rec.score(lid, cid[:2])
    with pytest.raises(UnknownIdError, match=r"course_ids: 2 of 3 ids are unknown.*'nope'"):
        rec.score(lid, [cid[0], "nope", "nada"])
    with pytest.raises(UnknownIdError, match="learner_ids: 1 of 3 ids are unknown"):
        rec.score([lid[0], "nobody", lid[1]], cid)
    with pytest.raises(TypeError, match="learner_ids: must be a 1-D sequence"):
        rec.score("L000", "C000")
    cold = copy_of(rec, cold_start="empty_history")
    ids, scores = cold.recommend(["nobody"], N=5, filter_already_watched=False)
    np.testing.assert_allclose(cold.score(["nobody"] * 5, ids[0]), scores[0], rtol=1e-6)


def test_ids_of_another_kind_than_the_maps_are_a_type_error_naming_the_argument(rec):
    """Integer ids against a map of text ids (or text against integers) never match: the
    lenient look-ups called every id unknown (all cold starts, NaN scores) and the strict
    ones reported every id as unknown, without saying why."""
    lid, cid = rec.learner_ids.index[:3].tolist(), rec.course_ids.index[:3].tolist()
    cold = copy_of(rec, cold_start="empty_history")
    ints = [0, 1, 2]
    for call, what in (
        (lambda: cold.known_learners(ints), "learner_ids"),
        (lambda: cold.history_sizes(np.arange(3)), "learner_ids"),
        (lambda: cold.recommend(ints, N=3), "learner_ids"),
        (lambda: cold.score_stats(pd.Series(ints)), "learner_ids"),
        (lambda: rec.known_courses(ints), "course_ids"),
        (lambda: rec.score(lid, ints), "course_ids"),
        (lambda: rec.recommend(lid, N=3, candidates=ints), "candidates"),
    ):
        with pytest.raises(TypeError, match=rf"{what}: 3 int ids \(dtype int64, e.g. \[0, 1, 2\]\),"
                                             r" but the \w+ map holds str ids"):  # fmt: skip
            call()
    frame = pd.DataFrame({"learner_id": ints, "course_id": cid})
    with pytest.raises(TypeError, match=r"frame.learner_id: 3 int ids .* holds str ids"):
        cold.score_table(frame, unknown="nan")
    # the reverse: text ids against integer maps, with the dtypes and examples of both
    n_l, n_c = len(rec.learner_ids), len(rec.course_ids)
    int_rec = NCFRecommender(
        rec.model, rec.snapshot, IdMap(np.arange(n_l), "learner_id"),
        IdMap(np.arange(n_c), "course_id"), device="cpu", cold_start="empty_history",
    )  # fmt: skip
    with pytest.raises(TypeError, match=r"learner_ids: 2 str ids \(dtype \w+, e.g. \['1', '2'\]\)"
                                        r", but the learner_id map holds int ids \(dtype int64, "
                                        r"e.g. \[0, 1, 2\]\)"):  # fmt: skip
        int_rec.known_learners(["1", "2"])
    assert int_rec.known_learners([1, n_l]).tolist() == [True, False]  # same kind: as before


def test_recommend_table_is_recommend_as_a_long_table(rec):
    learners = rec.learner_ids.index[:25].tolist()
    ids, scores = rec.recommend(learners, N=10)
    table = rec.recommend_table(learners, N=10)
    validate_candidates(table, score_columns=["ncf_score"])
    assert list(table.columns) == ["learner_id", "course_id", "ncf_score", "ncf_rank"]
    assert table["ncf_score"].dtype == np.float64 and table["ncf_rank"].dtype == np.int64
    assert table["learner_id"].dtype == rec.learner_ids.index.dtype
    assert table["course_id"].dtype == rec.course_ids.index.dtype
    np.testing.assert_array_equal(table["learner_id"].to_numpy(), np.repeat(learners, 10))
    np.testing.assert_array_equal(table["course_id"].to_numpy(), ids.ravel())
    np.testing.assert_array_equal(table["ncf_score"].to_numpy(), scores.ravel().astype(np.float64))
    np.testing.assert_array_equal(table["ncf_rank"].to_numpy(), np.tile(np.arange(1, 11), 25))
    chunked = copy_of(rec, chunk_size=4).recommend_table(learners, N=10)
    # float32 products in other batch shapes round differently (~1e-6 relative at d = 128)
    pd.testing.assert_frame_equal(chunked, table, check_exact=False, rtol=1e-5)
    shared = rec.course_ids.index[:6].tolist()  # one list for all, fewer than N: ragged
    small = rec.recommend_table(learners, N=10, candidates=shared, filter_already_watched=False)
    assert len(small) == 25 * 6 and set(small["course_id"]) == set(shared)
    empty = rec.recommend_table([], N=3)
    assert len(empty) == 0 and list(empty.columns) == list(table.columns)
    validate_candidates(empty, score_columns=["ncf_score"])


def test_per_learner_candidates_are_ragged_and_exclusion_applies_on_top(rec, caplog):
    learners = [rec.learner_ids.index[i] for i in (4, 0, 9)]  # not in id-map order
    seen0 = rec.course_ids.to_ids(
        rec.snapshot.seen[rec.learner_ids.to_index([learners[0]])[0]].indices
    )
    assert len(seen0), "the first learner has watched something"
    unseen = [c for c in rec.course_ids.index if c not in set(seen0)]
    allowed = {
        learners[0]: [seen0[0], *unseen[:4]],  # one already watched
        learners[1]: unseen[10:12],
        learners[2]: [],  # no candidates: no rows
    }
    frame = pd.DataFrame(
        [(lrn, c) for lrn, cs in allowed.items() for c in cs]
        + [(rec.learner_ids.index[50], unseen[0])],  # a learner not asked for: ignored
        columns=["course_id", "learner_id"][::-1],
    )
    with caplog.at_level(logging.WARNING, logger="ncf.serving"):
        table = rec.recommend_table(learners, N=10, candidates=frame)
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and "1 of 8 rows ignored" in ignored[0]  # counted, not silent
    assert repr(rec.learner_ids.index[50]) in ignored[0]  # and named
    validate_candidates(table, score_columns=["ncf_score"])
    counts = table.groupby("learner_id", sort=False, observed=True).size()
    assert counts.to_dict() == {learners[0]: 4, learners[1]: 2}  # seen one excluded
    assert table["learner_id"].iloc[0] == learners[0]  # the given learner order
    for lrn, rows in table.groupby("learner_id", sort=False, observed=True):
        assert set(rows["course_id"]) <= set(allowed[lrn]) - {seen0[0]}
        assert (np.diff(rows["ncf_score"].to_numpy()) <= 0).all()
    everything = rec.recommend_table(learners, N=None, candidates=frame,
                                     filter_already_watched=False)  # fmt: skip
    assert len(everything) == 5 + 2 and seen0[0] in set(everything["course_id"])
    top2 = rec.recommend_table(learners, N=2, candidates=frame)
    assert len(top2) == 4 and top2["ncf_rank"].max() == 2
    # the 2-D API: the same lists, padded with None / -inf
    ids, scores = rec.recommend(learners, N=5, candidates=frame)
    assert (ids[0, :4] == table["course_id"].to_numpy()[:4]).all() and ids[0, 4] is None
    assert (ids[2] == None).all() and np.isneginf(scores[2]).all()  # noqa: E711
    np.testing.assert_array_equal(scores[1, :2], table["ncf_score"].to_numpy()[4:6])


def test_candidate_table_for_none_of_the_learners_asked_for_raises(rec, caplog):
    """A table none of whose learner ids is in the request (here: the ids lower-cased) would
    leave every learner without a candidate: a caller mistake, so an error naming both."""
    learners = rec.learner_ids.index[:2].tolist()
    courses = rec.course_ids.index[5:7].tolist()
    lower = pd.DataFrame({"learner_id": [x.lower() for x in learners], "course_id": courses})
    assert not set(lower["learner_id"]) & set(learners)
    for call in (rec.recommend, rec.recommend_table):
        with pytest.raises(
            CandidateError,
            match=r"none of the table's 2 rows is for a learner "
            rf"asked for: its 2 learner id\(s\) \(e.g. \['{lower.learner_id[0]}'",
        ):
            call(learners, N=2, candidates=lower)  # fmt: skip
    # one row for a learner asked for: served, and the other row counted as ignored
    mixed = lower.assign(learner_id=[learners[0], lower.learner_id[1]])
    with caplog.at_level(logging.WARNING, logger="ncf.serving"):
        ids, _ = rec.recommend(learners, N=2, candidates=mixed, filter_already_watched=False)
    assert ids[0, 0] == courses[0] and (ids[1] == None).all()  # noqa: E711
    assert any("1 of 2 rows ignored" in r.getMessage() for r in caplog.records)


def test_candidate_table_errors(rec):
    learners = rec.learner_ids.index[:3].tolist()
    with pytest.raises(CandidateError, match=r"candidates: column\(s\) \['course_id'\] missing"):
        rec.recommend_table(learners, candidates=pd.DataFrame({"learner_id": learners}))
    bad = pd.DataFrame({"learner_id": learners, "course_id": ["nope", "C001", "C002"]})
    with pytest.raises(UnknownIdError, match="candidates.course_id: 1 of 3 ids are unknown"):
        rec.recommend(learners, candidates=bad)
    with pytest.raises(ValueError, match=r"learner_ids: must be unique .* 1 repeat"):
        rec.recommend_table([*learners, learners[0]])
    with pytest.raises(ValueError, match="N: must be a positive int or None"):
        rec.recommend_table(learners, N=0)


def test_score_table_adds_a_column_or_nan_for_pairs_it_cannot_score(rec):
    table = rec.recommend_table(rec.learner_ids.index[:5].tolist(), N=4).drop(columns="ncf_rank")
    scored = rec.score_table(table.drop(columns="ncf_score"), prefix="two_tower")
    np.testing.assert_allclose(scored["two_tower_score"], table["ncf_score"], rtol=1e-6)
    odd = pd.concat(
        [table[["learner_id", "course_id"]],
         pd.DataFrame({"learner_id": ["L499", "nobody"], "course_id": ["nope", "C001"]})],
        ignore_index=True,
    )  # fmt: skip
    with pytest.raises(UnknownIdError):
        rec.score_table(odd)
    lenient = rec.score_table(odd, unknown="nan")
    assert lenient["ncf_score"].isna().tolist() == [False] * len(table) + [True, True]
    validate_candidates(lenient, score_columns=["ncf_score"], allow_nan=["ncf_score"])


def test_score_stats_match_a_dense_computation(rec):
    cold = copy_of(rec, cold_start="empty_history", chunk_size=16)
    learners = [*rec.learner_ids.index[:40].tolist(), "nobody"]
    stats = cold.score_stats(learners)
    assert list(stats.columns) == ["learner_id", "ncf_mean", "ncf_std", "ncf_logsumexp"]
    assert stats["learner_id"].tolist() == learners
    emb = cold.learner_embeddings(learners).cpu().numpy().astype(np.float64)  # (41, d)
    courses = cold.course_embeddings().cpu().numpy().astype(np.float64)  # (n_courses, d)
    dense = emb @ courses.T  # (41, n_courses): every course, watched ones included
    np.testing.assert_allclose(stats["ncf_mean"], dense.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["ncf_std"], dense.std(1), rtol=1e-5)
    np.testing.assert_allclose(stats["ncf_logsumexp"], logsumexp(dense, axis=1), rtol=1e-6)
    # the z-score and log-softmax a blender forms from them agree with `score`
    lid, cid = learners[0], rec.course_ids.index[7]
    z = (rec.score([lid], [cid])[0] - stats["ncf_mean"][0]) / stats["ncf_std"][0]
    assert z == pytest.approx((dense[0, 7] - dense[0].mean()) / dense[0].std(), rel=1e-4)


def test_score_and_score_stats_hold_at_most_a_block_of_scores(rec, monkeypatch):
    """score and score_stats held a (chunk_size, n_courses) float32 score matrix (and
    score_stats three float64 copies): 4,096 learners x 50,000 courses took 0.8 and 5.3 GB.
    They now go by blocks of max(1, SCORE_BLOCK // n_courses) learners, same results: the
    learner vectors are computed per chunk as before; only the product's float32 rounding
    may differ in the last bit (BLAS kernels differ by row count), as between chunk sizes."""
    import ncf.recommender as recommender

    cold = copy_of(rec, cold_start="empty_history")
    learners = [*rec.learner_ids.index[:40].tolist(), "nobody", *rec.learner_ids.index[:5]]
    picks = np.random.default_rng(0).integers(0, len(rec.course_ids), size=len(learners))
    courses = rec.course_ids.index[picks].tolist()
    whole_score, whole_stats = cold.score(learners, courses), cold.score_stats(learners)
    assert cold._score_rows() == cold.chunk_size  # this catalogue: one block of 4,096
    n_courses = len(rec.course_ids)
    blocks = []  # the learners of every score matrix formed
    score_blocks = NCFRecommender._score_blocks

    def recorded(self, idx):
        for lo, s in score_blocks(self, idx):
            assert s.shape[1] == n_courses
            blocks.append(s.shape[0])
            yield lo, s

    monkeypatch.setattr(NCFRecommender, "_score_blocks", recorded)
    for block_scores, rows in ((3 * n_courses, 3), (n_courses + 1, 1), (5, 1)):
        monkeypatch.setattr(recommender, "SCORE_BLOCK", block_scores)
        blocks.clear()
        got = cold.score(learners, courses)
        np.testing.assert_allclose(got, whole_score, rtol=1e-6, atol=1e-6)
        assert max(blocks) == rows and sum(blocks) == 41  # the distinct learners, in blocks
        blocks.clear()
        pd.testing.assert_frame_equal(cold.score_stats(learners), whole_stats, rtol=1e-6)
        assert max(blocks) == rows and sum(blocks) == len(learners)


def test_learner_embeddings_by_caller_ids(rec):
    ids = rec.learner_ids.index[[7, 2, 7]].tolist()
    by_id = rec.learner_embeddings(ids)
    by_index = rec.learner_embeddings_at(rec.learner_ids.to_index(ids))
    torch.testing.assert_close(by_id, by_index)
    with pytest.raises(UnknownIdError, match="learner_ids: 1 of 1 ids are unknown"):
        rec.learner_embeddings(["nobody"])


def test_history_sizes_count_the_input_history_and_zero_for_strangers(rec):
    ids = rec.learner_ids.index[[3, 0, 11]].tolist()
    rows = rec.learner_ids.to_index(ids)
    expect = np.diff(rec.snapshot.history.indptr)[rows]
    np.testing.assert_array_equal(rec.history_sizes([*ids, "nobody"]), [*expect, 0])


def test_a_cosine_model_is_served_by_its_cosine_score(rec, log):
    """recommend, score and score_stats rank by `TwoTower.score` (unit vectors / temperature),
    as validation does, not by the raw dot product of the tower outputs."""
    torch.manual_seed(0)
    model = TwoTower(len(rec.learner_ids), len(rec.course_ids), bag_dim=16, mlp=[8],
                     score="cosine", temperature=0.2)  # fmt: skip
    cos = NCFRecommender(model, rec.snapshot, rec.learner_ids, rec.course_ids, device="cpu")
    learners = rec.learner_ids.index[:10].tolist()
    full = model.score(cos.learner_embeddings(learners), cos.course_embeddings()).numpy()
    ids, scores = cos.recommend(learners, N=5, filter_already_watched=False)
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :5], rtol=1e-5)
    np.testing.assert_allclose(cos.score_stats(learners)["ncf_mean"], full.mean(1), atol=1e-5)


def test_a_model_put_back_in_train_mode_is_served_in_eval_mode(rec):
    """Further training leaves the shared model in train mode: dropout (0.5 here) would put
    noise in every score. Each scoring path puts it back in eval mode first."""
    torch.manual_seed(0)
    model = TwoTower(len(rec.learner_ids), len(rec.course_ids), bag_dim=16, mlp=[8], dropout=0.5)
    r = NCFRecommender(model, rec.snapshot, rec.learner_ids, rec.course_ids, device="cpu")
    learners = rec.learner_ids.index[:20].tolist()
    want_ids, want = r.recommend(learners, N=5)
    want_embeddings = r.learner_embeddings(learners)
    model.train()
    ids, got = r.recommend(learners, N=5)
    assert not model.training
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(got, want)
    model.train()
    torch.testing.assert_close(r.learner_embeddings(learners), want_embeddings, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_recommenders_sharing_one_model_on_two_devices_each_serve_on_their_own(rec):
    """NCFRecommender moves the model it is given in place (`.to`). A second recommender on
    another device used to leave the first indexing a model on the wrong device (an
    embedding_bag device error); each one now puts the shared model on its device first."""
    gpu = copy_of(rec, device="cuda")
    cpu = copy_of(rec, device="cpu")  # moves the shared model to the CPU
    learners = rec.learner_ids.index[:30].tolist()
    ids_gpu, s_gpu = gpu.recommend(learners, N=10)  # moves it back
    assert next(rec.model.parameters()).is_cuda
    ids_cpu, s_cpu = cpu.recommend(learners, N=10)
    assert next(rec.model.parameters()).device.type == "cpu"
    np.testing.assert_allclose(s_gpu, s_cpu, rtol=1e-5, atol=1e-5)
    assert (ids_gpu == ids_cpu).mean() > 0.99  # near-equal scores may swap across devices
    rec.recommend(learners[:1])  # the fixture's own recommender, for the tests after this one


@pytest.mark.parametrize("which", ["trained", "attention"])
def test_a_model_in_another_float_dtype_serves_the_same_scores(rec, which):
    """model.double() (or bfloat16) failed in every scoring path: the history and co-watch
    bags are float32, and EmbeddingBag refuses per_sample_weights of another dtype than
    its table. The bag weights now take the table's dtype."""
    import copy

    model = rec.model
    if which == "attention":
        torch.manual_seed(0)
        config = {**rec.model.config, "pooling": "attention", "course_bias": True}
        model = TwoTower(**config).eval()
    r32 = NCFRecommender(model, rec.snapshot, rec.learner_ids, rec.course_ids, device="cpu")
    learners = rec.learner_ids.index[:30].tolist()
    picks = np.random.default_rng(0).integers(0, len(rec.course_ids), size=len(learners))
    courses = rec.course_ids.index[picks].tolist()
    want_ids, want = r32.recommend(learners, N=10)
    for dtype, tol in ((torch.float64, 1e-5), (torch.bfloat16, 0.1)):
        other = copy.deepcopy(model).to(dtype)
        r = NCFRecommender(other, rec.snapshot, rec.learner_ids, rec.course_ids, device="cpu")
        assert r.course_embeddings().dtype == dtype
        ids, got = r.recommend(learners, N=10)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        np.testing.assert_allclose(r.score(learners, courses), r32.score(learners, courses),
                                   rtol=tol, atol=tol)  # fmt: skip
        stats, stats32 = r.score_stats(learners), r32.score_stats(learners)
        for col in ("ncf_mean", "ncf_std", "ncf_logsumexp"):
            np.testing.assert_allclose(stats[col], stats32[col], rtol=tol, atol=tol)
        if dtype == torch.float64:  # the same lists (bfloat16 may swap near-equal scores)
            np.testing.assert_array_equal(ids, want_ids)


# ---- persistence -----------------------------------------------------------------------------
def test_save_load_keeps_input_settings_and_at_works_after_load(rec, log, tmp_path):
    T = rec.snapshot.cutoff
    later = rec.at(log, T + 10 * DAY)
    later.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION == 3
    assert config["inputs"] == rec.inputs.config and config["content"] is False
    loaded = NCFRecommender.load(tmp_path / "model", device=rec.device)  # as rec: same kernels
    assert loaded.inputs.config == rec.inputs.config and loaded.normalize == rec.normalize
    assert loaded.model_cutoff == T and loaded.snapshot.cutoff == T + 10 * DAY
    assert loaded.serving_report == later.serving_report and loaded.format_version == 3
    learners = rec.learner_ids.index[:30]
    np.testing.assert_array_equal(loaded.recommend(learners)[1], later.recommend(learners)[1])
    a = loaded.at(log, T + 30 * DAY).recommend(learners)
    b = rec.at(log, T + 30 * DAY).recommend(learners)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="before the model's training cutoff"):
        loaded.at(log, T - DAY)  # the model's cutoff survived the round trip


def test_save_load_keeps_chunk_size(rec, tmp_path):
    """chunk_size was not saved: a loaded recommender served in chunks of the default 4096."""
    small = copy_of(rec, chunk_size=7)
    folder = small.save(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["chunk_size"] == 7
    loaded = NCFRecommender.load(folder, device="cpu")
    assert loaded.chunk_size == 7
    assert NCFRecommender.load(rec.save(tmp_path / "default"), device="cpu").chunk_size == 4096
    del config["chunk_size"]  # a folder saved before chunk_size was: the default
    (folder / "config.json").write_text(json.dumps(config))
    assert NCFRecommender.load(folder, device="cpu").chunk_size == 4096


def test_naive_and_string_cutoffs_are_read_as_utc(rec, log, tmp_path):
    """A naive snapshot cutoff or a string model cutoff is UTC, as `at` reads its cutoff:
    `at` compares them (not a tz TypeError) and a save / load round trip keeps them."""
    T = rec.snapshot.cutoff
    naive_snap = dataclasses.replace(rec.snapshot, cutoff=T.tz_localize(None))
    kwargs = dict(inputs=rec.inputs, device="cpu")
    naive = NCFRecommender(rec.model, naive_snap, rec.learner_ids, rec.course_ids, **kwargs)
    assert naive.snapshot.cutoff == T and str(naive.snapshot.cutoff.tz) == "UTC"
    assert naive.model_cutoff == T and naive_snap.cutoff.tzinfo is None  # the caller's: as is
    with pytest.raises(ValueError, match="before the model's training cutoff"):
        naive.at(log, T - DAY)
    assert naive.at(log, T + DAY).snapshot.cutoff == T + DAY
    text = copy_of(rec, model_cutoff=str(T.tz_localize(None)))  # "YYYY-MM-DD hh:mm:ss"
    assert text.model_cutoff == T and str(text.model_cutoff.tz) == "UTC"
    with pytest.raises(ValueError, match="before the model's training cutoff"):
        text.at(log, T - DAY)
    with pytest.raises(ValueError, match="model_cutoff: 'soon' is not a parseable timestamp"):
        copy_of(rec, model_cutoff="soon")
    snap = rec.inputs.inference_snapshot(log, T.tz_localize(None))  # naive = UTC here too
    assert snap.cutoff == T and str(snap.cutoff.tz) == "UTC"
    naive.save(tmp_path / "naive")
    loaded = NCFRecommender.load(tmp_path / "naive", device="cpu")
    assert loaded.snapshot.cutoff == T and loaded.model_cutoff == T
    assert loaded.at(log, T + DAY).model_cutoff == T


def test_old_format_folders_serve_their_snapshot_but_at_asks_for_a_re_save(rec, log, tmp_path):
    rec.save(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    config = json.loads(path.read_text())
    old = {k: config[k] for k in ("model", "normalize", "cold_start", "cutoff", "snapshot")}
    path.write_text(json.dumps(old))  # what save wrote before format_version 2
    loaded = NCFRecommender.load(tmp_path / "model", device=rec.device)  # as rec: same kernels
    assert loaded.inputs is None and loaded.format_version == 1
    learners = rec.learner_ids.index[:20]
    np.testing.assert_array_equal(loaded.recommend(learners)[1], rec.recommend(learners)[1])
    with pytest.raises(ValueError, match="saved without input settings.*Re-save"):
        loaded.at(log, rec.snapshot.cutoff)
    loaded.inputs = InputBuilder(**rec.inputs.config)  # the re-save the message asks for
    loaded.save(tmp_path / "resaved")
    again = NCFRecommender.load(tmp_path / "resaved", device="cpu")
    same_snapshot(again.at(log, rec.snapshot.cutoff).snapshot, rec.snapshot)

    path.write_text(json.dumps({**config, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match=f"format_version {FORMAT_VERSION + 1}; this code reads"):
        NCFRecommender.load(tmp_path / "model")
    path.write_text(json.dumps({**config, "content": True}))
    with pytest.raises(ValueError, match="content.npz is missing"):
        NCFRecommender.load(tmp_path / "model")
    shutil.rmtree(tmp_path / "model")


def test_constructor_checks_shapes(rec):
    smaller = IdMap(rec.course_ids.index[:-1], "course_id")
    with pytest.raises(
        ValueError, match=r"snapshot.history is \(500, 120\), expected \(500, 119\)"
    ):
        NCFRecommender(rec.model, rec.snapshot, rec.learner_ids, smaller, device="cpu")
    with pytest.raises(TypeError, match="inputs: must be an InputBuilder"):
        NCFRecommender(rec.model, rec.snapshot, rec.learner_ids, rec.course_ids, inputs={})


# ---- fit on another split --------------------------------------------------------------------
def test_fit_on_an_earlier_split_then_serve_at_the_later_cutoff(trained, tmp_path):
    data, log = trained.data, trained.data.log
    late = data.split.test.cutoff
    early = temporal_split(log, end=late, valid_days=30, test_days=30)
    again = fit(compose_cfg(tmp_path, "trainer.max_epochs=1"), data, tmp_path, split=early)
    assert again.datamodule.split is early
    assert again.recommender.snapshot.cutoff == early.test.cutoff < late
    assert again.valid_recommender.snapshot.cutoff == early.valid.cutoff
    served = again.recommender.at(log, late)
    same = trained.recommender.snapshot  # the inputs at `late` do not depend on the model
    same_snapshot(served.snapshot, same)
    assert isinstance(served.recommend_table(log.learner_ids.index[:5], N=3), pd.DataFrame)
    assert sp.issparse(served.snapshot.seen)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_a_chunk_size_that_runs_no_chunk_is_refused(rec, bad):
    """range(0, n, -1) runs no chunk: scores were uninitialised memory, embeddings empty."""
    with pytest.raises(ValueError, match=r"chunk_size: must be a positive int"):
        NCFRecommender(rec.model, rec.snapshot, rec.learner_ids, rec.course_ids,
                       device="cpu", chunk_size=bad)  # fmt: skip


def test_new_retrieval_settings_replace_an_index_built_with_the_old_ones(rec):
    """An index fitted on first use must not keep serving after `retrieval` is set again."""
    import copy

    pytest.importorskip("faiss")
    from ncf.ann import ItemIndex

    r = copy.deepcopy(rec)
    ids = list(r.learner_ids.index[:3])
    r.retrieval = ItemIndex("ivf", ivf_nprobe=1)
    r.recommend(ids, 2)
    assert r._indexes["ivf"].ivf_nprobe == 1
    r.retrieval = ItemIndex("ivf", ivf_nprobe=4)
    assert r._indexes == {}  # dropped with the old settings
    r.recommend(ids, 2)
    assert r._indexes["ivf"].ivf_nprobe == 4


def test_every_scoring_path_refuses_a_model_with_non_finite_embeddings(rec):
    """A model whose weights went NaN: recommend raised, score / score_stats returned NaN."""
    import copy

    ids = list(rec.learner_ids.index[:3])
    course = rec.course_ids.index[7]
    r = copy.deepcopy(rec)
    with torch.no_grad():
        r.model.course_bias[7] = float("nan")  # one course's score is NaN for every learner
    r._courses = None  # the cached course vectors were computed before
    for call in (
        lambda: r.recommend(ids, 5),
        lambda: r.score(ids, [course] * 3),
        lambda: r.score_stats(ids),
    ):
        with pytest.raises(ValueError, match=rf"course embeddings: must be finite; 1 row\(s\) "
                                             rf"hold NaN/inf \(e.g. {course}\)"):  # fmt: skip
            call()
    r = copy.deepcopy(rec)
    with torch.no_grad():
        for p in r.model.learner_tower.parameters():
            p.fill_(float("nan"))  # every learner
    with pytest.raises(ValueError, match=rf"learner embeddings: must be finite; .*{ids[0]}"):
        r.score(ids, [course] * 3)


def test_recommend_searches_with_the_callers_item_index(rec):
    """method=<ItemIndex> was refused with an error that said an ItemIndex was accepted."""
    pytest.importorskip("faiss")
    from ncf.ann import ItemIndex

    ids = list(rec.learner_ids.index[:20])
    want = rec.recommend(ids, 5, method="exact")
    fitted = ItemIndex("exact").fit(rec._items())  # a flat index: the exact lists
    for index in (fitted, ItemIndex("exact")):  # fitted by the caller, or for the call
        got = rec.recommend(ids, 5, method=index)
        np.testing.assert_array_equal(got[0], want[0])
    assert not rec._indexes  # the caller's index is not kept
    other = ItemIndex("exact").fit(np.ones((3, rec._items().shape[1]), np.float32))
    with pytest.raises(ValueError, match=r"the ItemIndex was fitted on items of shape \(3, "):
        rec.recommend(ids, 5, method=other)


def test_course_vectors_and_indexes_follow_the_models_weights(rec):
    """Course vectors were computed once per recommender and kept: after load_state_dict
    or further training it served the old model's lists and scores, and an approximate
    index fitted on the old vectors kept serving."""
    import copy

    pytest.importorskip("faiss")
    r = copy.deepcopy(rec)
    ids, cids = list(r.learner_ids.index[:20]), list(r.course_ids.index[:20])
    before = r.recommend(ids, 5, method="exact")
    r.recommend(ids, 5, method="ivf")
    old_index = r._indexes["ivf"]
    torch.manual_seed(1)
    r.model.load_state_dict(TwoTower(**r.model.config).state_dict())  # other weights

    def same_as_a_fresh_recommender() -> None:
        fresh = copy_of(r, device=r.device)  # on the model as it is now: nothing cached
        for method in ("exact", "ivf"):
            got, want = r.recommend(ids, 5, method=method), fresh.recommend(ids, 5, method=method)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(r.score(ids, cids), fresh.score(ids, cids))
        pd.testing.assert_frame_equal(r.score_stats(ids), fresh.score_stats(ids))
        torch.testing.assert_close(r.course_embeddings(), fresh.course_embeddings())

    same_as_a_fresh_recommender()
    assert r._indexes["ivf"] is not old_index  # refitted on the new vectors
    assert not np.array_equal(r.recommend(ids, 5, method="exact")[1], before[1])
    with torch.no_grad():  # an in-place update, as an optimizer step makes
        for p in r.model.course_tower.parameters():
            p.mul_(0.5)
    same_as_a_fresh_recommender()
    kept = r.course_embeddings()
    assert r.course_embeddings() is kept  # unchanged weights: computed once, not per call


def test_a_fitted_index_hashes_the_course_vectors_once_not_per_chunk(rec, monkeypatch):
    """The SHA-256 check of a fitted index is paid once per course vectors, not per chunk
    of learners, also when score_stats computed the vectors first (in inference mode, where
    tensors keep no version counter and every chunk was hashed again)."""
    pytest.importorskip("faiss")
    import ncf.ann as ann
    from ncf.ann import ItemIndex

    r = copy_of(rec, chunk_size=7)
    ids = list(r.learner_ids.index[:40])  # 6 chunks
    r.score_stats(ids[:2])  # the course vectors are computed here first
    hashed = []
    real = ann.items_sha256
    monkeypatch.setattr(ann, "items_sha256", lambda x: hashed.append(1) or real(x))
    index = ItemIndex("exact").fit(r._items())
    want = r.recommend(ids, 5, method="exact")
    got = r.recommend(ids, 5, method=index)
    np.testing.assert_array_equal(got[0], want[0])
    assert len(hashed) == 1  # at the fit; the 6 chunks' checks found the same tensor


def test_a_damaged_saved_folder_is_a_named_error(rec, tmp_path):
    """A folder edited by hand, damaged or from newer code: errors that name the file, not a
    bare JSONDecodeError / TypeError / ambiguous id map."""
    from watchlog.io import CorruptFolderError

    good = rec.save(tmp_path / "good")

    def damaged(name: str, edit) -> Path:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        edit(folder)
        return folder

    def config_edit(change):
        def edit(folder: Path) -> None:
            config = json.loads((folder / "config.json").read_text())
            change(config)
            (folder / "config.json").write_text(json.dumps(config))

        return edit

    cases = {
        "truncated": (lambda f: (f / "config.json").write_text('{"model": '),
                      r"config.json: unreadable \(Expecting value"),
        "unknown model key": (config_edit(lambda c: c["model"].update(wings=2)),
                              r"config.json: its model, inputs, cutoff or chunk_size settings "
                              r"cannot be read by this code \(TypeError: .*wings"),
        "bad chunk_size": (config_edit(lambda c: c.update(chunk_size=0)),
                           r"config.json: its model, .*chunk_size: must be a positive int; got 0"),
        "unknown inputs key": (config_edit(lambda c: c["inputs"].update(lookback=3)),
                               r"config.json: its model, .*lookback"),
        "other weights": (config_edit(lambda c: c["model"].update(bag_dim=3)),
                          r"weights.pt: does not fit the model config.json describes"),
        "garbage weights": (lambda f: (f / "weights.pt").write_bytes(b"not a torch file"),
                            r"weights.pt: does not fit .* or is damaged"),
    }  # fmt: skip
    for name, (edit, message) in cases.items():
        with pytest.raises(CorruptFolderError, match=message):
            NCFRecommender.load(damaged(name.replace(" ", "_"), edit), device="cpu")
    with pytest.raises(FileNotFoundError, match="no config.json; not a folder written by"):
        NCFRecommender.load(tmp_path, device="cpu")
    repeated = pd.DataFrame(
        {"course_id": list(rec.course_ids.index[:-1]) + [rec.course_ids.index[0]]}
    )
    folder = damaged("repeated_ids", lambda f: repeated.to_parquet(f / "course_ids.parquet"))
    with pytest.raises(ValueError, match=r"course_ids.parquet: course_id: ids must be distinct"):
        NCFRecommender.load(folder, device="cpu")


def test_the_candidate_builder_refuses_a_two_tower_serving_another_snapshot(rec, log):
    """A library user wiring a later snapshot to a fold: its lists leave the fold's labels
    out as already watched, so the blender would learn from candidates without positives."""
    from blend import CandidateBuilder
    from watchlog.splits import Fold, LeakageError

    T = rec.snapshot.cutoff
    events = log.events
    fold = Fold(
        "valid", "temporal", events[events["ts"] < T], events[events["ts"] >= T], T, T + 30 * DAY
    )
    builder = CandidateBuilder(n_retrieve=5, n_fallback=3, item_item=None)
    learners = list(log.learner_ids.index[:10])
    assert len(builder.build(learners, log=log, fold=fold, retriever=rec))  # its own cutoff
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        later = rec.at(log, T + 10 * DAY)
    for call in (builder.build, lambda *a, **k: next(builder.chunks(*a, **k))):
        with pytest.raises(LeakageError, match=r"the two-tower scoring the valid window serves "
                                               r"the snapshot at .*not the window's inputs"):  # fmt: skip
            call(learners, log=log, fold=fold, retriever=later)
    # a context from the builder (what a chunked caller passes) no longer skips the check
    with pytest.raises(LeakageError, match=r"serves the snapshot at .*not the window's inputs"):
        builder.build(learners, log=log, fold=fold, retriever=later,
                      context=builder.context(log, fold))  # fmt: skip


def test_a_two_tower_trained_after_the_folds_cutoff_is_refused_at_any_snapshot(rec, log):
    """rec.at(..., allow_earlier=True) moves the snapshot back, not the weights: a model
    trained through a later cutoff has learned the earlier window's labels."""
    from blend import CandidateBuilder
    from watchlog.splits import Fold, LeakageError

    T = rec.snapshot.cutoff
    early = T - 10 * DAY
    events = log.events
    fold = Fold(
        "blend", "temporal", events[events["ts"] < early], events[events["ts"] >= early],
        early, T,
    )  # fmt: skip
    moved = rec.at(log, early, allow_earlier=True)
    assert moved.snapshot.cutoff == early and moved.model_cutoff == T
    builder = CandidateBuilder(n_retrieve=5, n_fallback=3, item_item=None)
    learners = list(log.learner_ids.index[:10])
    for ctx in (None, builder.context(log, fold)):
        with pytest.raises(LeakageError, match=r"two-tower scoring the blend window was trained "
                                               r"on events up to .*\(model_cutoff\), after"):  # fmt: skip
            builder.build(learners, log=log, fold=fold, retriever=moved, context=ctx)


def test_rows_or_empty_is_the_rows_asked_for_with_unknown_ones_empty():
    from ncf.serving import rows_or_empty

    m = sp.random(6, 9, density=0.4, format="csr", dtype=np.float32, random_state=0)
    m.data[0] = 0.0  # a stored zero stays stored: what the caller asked for is the rows
    for idx in ([4, -1, 0, 4, -1], [2, 5], [-1, -1], []):
        idx = np.asarray(idx, dtype=np.int64)
        got = rows_or_empty(m, idx)
        want = np.where((idx >= 0)[:, None], m.toarray()[np.maximum(idx, 0)], 0.0)
        assert got.shape == (len(idx), 9) and got.has_canonical_format
        np.testing.assert_array_equal(got.toarray(), want)
        assert (np.diff(got.indptr)[idx < 0] == 0).all()  # unknown rows hold no entry
        known = idx >= 0
        assert got.nnz == np.diff(m.indptr)[idx[known]].sum()
