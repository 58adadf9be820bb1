"""GLMixScorer: a saved GLMix scores (learner id, course id) pairs from the entity tables alone."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from glmix import (
    EntityFeaturizer,
    FixedEffect,
    GLMix,
    GLMixScorer,
    RandomEffect,
    UnknownEntityError,
    fit_on_split,
    row_designs,
    row_sets,
)
from glmix.rows import ROLES
from watchlog.candidates import CandidateError

pytestmark = pytest.mark.usefixtures("one_thread")

COLS = ["glmix_logit", "glmix_global", "glmix_per_learner", "glmix_per_course"]
LEARNER_SPEC = {
    "categorical": ["segment", "language", "industry"],
    "multi_hot": ["skills"],
    "numeric": ["signup_at"],  # a datetime: its missing row must stay a datetime
    "min_frequency": 5,
    "missing_indicator": True,
}
COURSE_SPEC = {
    "categorical": ["language", "category", "difficulty"],
    "numeric": ["duration_seconds"],
    "min_frequency": 5,
}


@pytest.fixture(scope="module")
def trained(small_platform):
    from watchlog.cleaning import clean
    from watchlog.splits import temporal_split

    log = clean(small_platform.log)
    split = temporal_split(log, valid_days=45, test_days=45)
    model = GLMix(
        fixed=FixedEffect(l2=1.0, tol=1e-4),
        random={
            "per_learner": RandomEffect(key="learner", l2=10.0, intercept_l2=1.0),
            "per_course": RandomEffect(key="course", l2=10.0, intercept_l2=1.0),
        },
    )
    feat = EntityFeaturizer(
        LEARNER_SPEC,
        COURSE_SPEC,
        factor_rank=3,
        factor_scale=0.5,
        crosses=[["learner.language", "course.language"]],
        coordinates={
            "per_learner": ["course.category", "course.factors"],
            "per_course": ["learner.segment", "learner.factors"],
        },
    )
    out = fit_on_split(log, split, model=model, featurizer=feat, weighting={"kind": "log1p"})
    return log, out


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("scorer") / "model"
    trained[1].scorer.save(path)
    return path, GLMixScorer.load(path)


def test_fit_on_split_returns_every_row_set_as_row_sets_builds_it(trained):
    """fit_on_split drops the train and refit rows for the selection fit and builds them again
    after it: the rows it returns are row_sets', every role, in order."""
    from watchlog.splits import temporal_split

    log, tr = trained
    rows = row_sets(temporal_split(log, valid_days=45, test_days=45))
    assert list(tr.rows) == list(ROLES) == list(rows)
    for k, r in rows.items():
        pd.testing.assert_frame_equal(tr.rows[k].events, r.events)
        np.testing.assert_array_equal(tr.rows[k].y, r.y)
    assert tr.metrics["train_rows"] == len(rows["train"])
    assert {k: v["rows"] for k, v in tr.metrics["rows"].items()} == {
        k: len(r) for k, r in rows.items()
    }


def _shuffled(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    return table.sample(frac=1.0, random_state=seed)  # index kept: not positional either


def test_loaded_scorer_reproduces_the_pipelines_test_scores(trained, saved):
    """Scores from the folder + shuffled tables = the in-memory model on the designs the
    training pipeline built for the test rows."""
    log, tr = trained
    path, loaded = saved
    test = tr.rows["test"]
    table = loaded.score_table(
        test.learner_ids, test.course_ids,
        learners=_shuffled(log.learners, 1), courses=_shuffled(log.courses, 2),
    )  # fmt: skip
    assert list(table.columns) == ["learner_id", "course_id", *COLS]
    assert all(table[c].dtype == np.float64 for c in COLS)
    np.testing.assert_allclose(table["glmix_logit"], tr.test_scores.total, rtol=1e-6, atol=1e-6)
    for c, s in tr.test_scores.components.items():
        np.testing.assert_allclose(table[f"glmix_{c}"], s, rtol=1e-6, atol=1e-6)
    # the in-memory model on the pipeline's own designs, once more
    enc = tr.scorer.featurizer.encode(log.learners, log.courses)
    direct = tr.scorer.model.predict_logit(row_designs(tr.scorer.featurizer, enc, test), test.keys)
    np.testing.assert_allclose(table["glmix_logit"], direct, rtol=1e-6, atol=1e-6)
    assert table.attrs["glmix_unknown"]["learners"] == 0
    assert (
        table.attrs["glmix_unknown"]["per_learner"]
        == tr.metrics["test"]["n_unknown"]["per_learner"]
    )


def test_folder_is_npz_and_json_and_label_factors_come_back(trained, saved):
    _, tr = trained
    path, loaded = saved
    assert sorted(p.name for p in path.iterdir()) == [
        "arrays.npz", "factors.npz", "model.json", "scorer.json",
    ]  # fmt: skip
    state = json.loads((path / "scorer.json").read_text())
    assert state["type"] == "GLMixScorer" and state["format_version"] == 1
    with np.load(path / "factors.npz", allow_pickle=False) as z:
        assert set(z.files) == {"learner_ids", "learner", "course_ids", "course"}
        assert z["learner"].shape[1] == 3 and z["learner_ids"].dtype.kind == "U"
    a, b = tr.scorer.featurizer.factors_, loaded.featurizer.factors_
    assert b.rank == 3 and b.scale == 0.5
    for side in ("learner", "course"):
        np.testing.assert_array_equal(getattr(a, side), getattr(b, side))
        assert list(getattr(a, f"{side}_ids")) == list(getattr(b, f"{side}_ids"))
    # the factors are used: the per-learner design reads course factors
    names = loaded.model.coordinates_["per_learner"].feature_names_
    assert "course.cf0" in names
    # GLMix.load reads the model alone from the same folder
    assert GLMix.load(path).history_ == loaded.model.history_


def test_the_scorer_records_the_end_of_its_training_events_and_the_folder_keeps_it(
    trained, saved, tmp_path
):
    """The blend refuses a window whose cutoff is before the scorer's training end: the
    scorer must know it (fit_on_split sets it) and keep it through save / load; a folder
    written before it was recorded loads with None (unknown: not checked)."""
    from watchlog.splits import temporal_split

    log, tr = trained
    split = temporal_split(log, valid_days=45, test_days=45)
    # no refit: the selected model's rows are validation's inputs, before its cutoff
    assert tr.scorer.trained_through == split.valid.cutoff
    assert tr.selected_scorer.trained_through == split.valid.cutoff
    path, loaded = saved
    assert loaded.trained_through == split.valid.cutoff
    state = json.loads((path / "scorer.json").read_text())
    old = tmp_path / "old"
    shutil.copytree(path, old)
    del state["trained_through"]
    (old / "scorer.json").write_text(json.dumps(state))
    assert GLMixScorer.load(old).trained_through is None


def test_shuffled_tables_chunks_and_candidates_agree(trained, saved):
    log, _ = trained
    _, scorer = saved
    rng = np.random.default_rng(0)
    lid = log.learners["learner_id"].to_numpy()[rng.integers(0, log.n_learners, 500)]
    cid = log.courses["course_id"].to_numpy()[rng.integers(0, log.n_courses, 500)]
    ordered = scorer.score_table(lid, cid, learners=log.learners, courses=log.courses)
    shuffled = scorer.score_table(
        lid, cid, learners=_shuffled(log.learners, 3), courses=_shuffled(log.courses, 4)
    )
    pd.testing.assert_frame_equal(ordered, shuffled)
    small = GLMixScorer(scorer.model, scorer.featurizer, chunk_pairs=7)  # 72 chunks
    chunked = small.score_table(lid, cid, learners=log.learners, courses=log.courses)
    pd.testing.assert_frame_equal(ordered, chunked, check_exact=False, rtol=1e-12)
    assert chunked.attrs == ordered.attrs
    # ids keep their dtype: strings stay strings (never object), integers integers
    dtype = ordered["learner_id"].dtype
    assert pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype)
    # a candidate table: same scores, columns added, row order and index kept
    cand = pd.DataFrame({"learner_id": pd.array(lid, dtype="str"), "course_id": cid})
    cand = cand.drop_duplicates().sort_values("learner_id", kind="stable")
    cand.index = cand.index + 100
    got = scorer.score_candidates(cand, learners=log.learners, courses=log.courses)
    assert got.index.equals(cand.index) and list(got.columns) == [*cand.columns, *COLS]
    assert "glmix_logit" not in cand.columns  # the input is not changed
    expect = ordered.drop_duplicates(["learner_id", "course_id"]).set_index(
        ["learner_id", "course_id"]
    )
    keyed = got.set_index(["learner_id", "course_id"])
    np.testing.assert_allclose(keyed["glmix_logit"], expect.loc[keyed.index, "glmix_logit"])
    assert got.attrs["glmix_unknown"]["learners"] == 0


def test_unknown_ids_missing_features_and_no_coefficients(trained, saved):
    log, _ = trained
    _, scorer = saved
    learners, courses = log.learners, log.courses
    known_l = learners["learner_id"].iloc[0]
    c = courses["course_id"].iloc[:3].to_numpy()
    # "ghost" is in no table: scored as a learner whose every feature is missing, which is
    # what a table row with every feature missing gives
    ghost = scorer.score_table(["ghost"] * 3, c, learners=learners, courses=courses)
    counts = {"learners": 3, "courses": 0, "per_learner": 3, "per_course": 0}
    assert ghost.attrs["glmix_unknown"] == counts
    blank = learners.iloc[:1].copy()
    blank["learner_id"] = pd.array(["ghost"], dtype=learners["learner_id"].dtype)
    for col in LEARNER_SPEC["categorical"] + LEARNER_SPEC["multi_hot"] + ["signup_at"]:
        blank[col] = blank[col].where(np.zeros(1, dtype=bool))  # missing, dtype kept
    with_blank = pd.concat([learners, blank], ignore_index=True)
    as_row = scorer.score_table(["ghost"] * 3, c, learners=with_blank, courses=courses)
    np.testing.assert_allclose(ghost[COLS].to_numpy(), as_row[COLS].to_numpy(), rtol=1e-12)
    # the same at the feature level (the model may put ~0 weight on never-seen indicators)
    absent = scorer.featurizer.encode(learners, courses)
    present = scorer.featurizer.encode(with_blank, courses)
    row_a = absent.learner.matrix[absent.positions("learner", ["ghost"])[0]].toarray()
    row_p = present.learner.matrix[present.positions("learner", ["ghost"])[0]].toarray()
    np.testing.assert_array_equal(row_a, row_p)
    on = [absent.learner.names[j] for j in np.flatnonzero(row_a[0])]
    assert "segment=<missing>" in on and "signup_at=<missing>" in on and "lf0" not in on
    assert as_row.attrs["glmix_unknown"]["learners"] == 0
    # the random effect gives 0 to an entity it never saw; the fixed effect still scores
    assert (ghost["glmix_per_learner"] == 0).all() and (ghost["glmix_global"] != 0).all()
    real = scorer.score_table([known_l] * 3, c, learners=learners, courses=courses)
    assert not np.allclose(ghost["glmix_global"], real["glmix_global"])
    fitted_ids = set(scorer.model.coordinates_["per_learner"].ids_.index)
    assert known_l in fitted_ids
    np.testing.assert_array_equal(scorer.known("learner", ["ghost", known_l]), [False, True])
    assert (real["glmix_per_learner"] != 0).all()
    # an unknown course: missing features, per_course 0, counted
    pairs = ([known_l, known_l], [c[0], "no-such-course"])
    both = scorer.score_table(*pairs, learners=learners, courses=courses)
    assert both.attrs["glmix_unknown"]["courses"] == 1 and both["glmix_per_course"].iloc[1] == 0
    # unknown="raise" names the table, the count and examples
    with pytest.raises(
        UnknownEntityError, match=r"1 of 2 pairs .* not in the courses table.*no-such"
    ):
        scorer.score_table(*pairs, learners=learners, courses=courses, unknown="raise")
    with pytest.raises(KeyError, match="keyed by it"):
        scorer.known("segment", ["a"])


def test_nan_in_a_numeric_feature_is_missing_not_an_error(trained, saved):
    log, _ = trained
    _, scorer = saved
    courses = log.courses.copy()
    courses.loc[courses.index[:5], "duration_seconds"] = np.nan
    c = courses["course_id"].iloc[:5].to_numpy()
    lid = [log.learners["learner_id"].iloc[0]] * 5
    a = scorer.score_table(lid, c, learners=log.learners, courses=courses)
    b = scorer.score_table(lid, c, learners=log.learners, courses=log.courses)
    assert np.isfinite(a["glmix_logit"]).all()
    assert not np.allclose(a["glmix_global"], b["glmix_global"])  # scored at the mean instead


def test_bad_inputs_raise_clear_errors(trained, saved, tmp_path):
    log, tr = trained
    _, scorer = saved
    L, C = log.learners, log.courses
    lid, cid = L["learner_id"].iloc[:2].to_numpy(), C["course_id"].iloc[:2].to_numpy()
    with pytest.raises(KeyError, match="learners: no 'learner_id' column"):
        scorer.score_table(lid, cid, learners=L.drop(columns="learner_id"), courses=C)
    dup = pd.concat([C, C.iloc[:2]], ignore_index=True)
    with pytest.raises(ValueError, match=r"courses.course_id: ids must be unique.*4 of"):
        scorer.score_table(lid, cid, learners=L, courses=dup)
    with pytest.raises(TypeError, match="learners: expected a pandas DataFrame"):
        scorer.score_table(lid, cid, learners=L.to_dict(), courses=C)
    with pytest.raises(ValueError, match="2 learner ids and 1 course ids"):
        scorer.score_table(lid, cid[:1], learners=L, courses=C)
    with pytest.raises(ValueError, match=r"learner_ids: ids must not be missing; 1 of 2"):
        scorer.score_table(pd.array([lid[0], None], dtype="str"), cid, learners=L, courses=C)
    with pytest.raises(TypeError, match="integers or strings"):
        scorer.score_table(np.array([1.5, 2.5]), cid, learners=L, courses=C)
    with pytest.raises(ValueError, match="unknown: must be one of"):
        scorer.score_table(lid, cid, learners=L, courses=C, unknown="drop")
    cand = pd.DataFrame({"learner_id": pd.array(lid, dtype="str"), "course_id": cid})
    with pytest.raises(ValueError, match="already has column"):
        scorer.score_candidates(cand.assign(glmix_logit=0.0), learners=L, courses=C)
    split = pd.DataFrame({"learner_id": pd.array([lid[0], lid[1], lid[0]], dtype="str"),
                          "course_id": [cid[0], cid[0], cid[1]]})  # fmt: skip
    with pytest.raises(CandidateError, match="contiguous"):
        scorer.score_candidates(split, learners=L, courses=C)
    # a featurizer that is not the model's: caught before scoring, naming the coordinate
    other = EntityFeaturizer({"categorical": ["segment"]}, {"categorical": ["category"]})
    other.fit(L, C)
    with pytest.raises(ValueError, match="coordinate 'global'.*not the one the model"):
        GLMixScorer(scorer.model, other).score_table(lid, cid, learners=L, courses=C)
    # a bare GLMix folder is not a scorer folder
    tr.scorer.model.save(tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match="bare GLMix"):
        GLMixScorer.load(tmp_path / "bare")


def _pairs_and_designs(learners, courses, learner_spec, course_spec, n, rng):
    """n random (learner, course) pairs of the two tables, a featurizer with these specs fitted
    on them, and the pairs' designs: (li (n,), ci (n,), featurizer, designs)."""
    li = learners["learner_id"].to_numpy()[rng.integers(0, len(learners), n)]
    ci = courses["course_id"].to_numpy()[rng.integers(0, len(courses), n)]
    feat = EntityFeaturizer(learner_spec, course_spec).fit(learners, courses)
    enc = feat.encode(learners, courses)
    designs = feat.designs(enc, enc.positions("learner", li)[0], enc.positions("course", ci)[0])
    return li, ci, feat, designs


def test_integer_ids_and_no_label_factors(tmp_path):
    """Integer ids stay integers; a featurizer without factors saves no factors.npz."""
    rng = np.random.default_rng(5)
    learners = pd.DataFrame({"learner_id": np.arange(100, 160), "g": rng.choice(list("abc"), 60)})
    courses = pd.DataFrame({"course_id": np.arange(20) * 7, "k": rng.choice(list("xyz"), 20)})
    n = 3000
    li, ci, feat, designs = _pairs_and_designs(
        learners, courses, {"categorical": ["g"]}, {"categorical": ["k"]}, n, rng
    )
    y = (rng.random(n) < 0.3 + 0.4 * (li % 2 == ci % 2)).astype(float)
    model = GLMix(
        fixed=FixedEffect(l2=1.0),
        random={"per_learner": RandomEffect(key="learner", l2=3.0)},
    ).fit(designs, {"learner": li, "course": ci}, y)
    GLMixScorer(model, feat).save(tmp_path / "m")
    assert not (tmp_path / "m" / "factors.npz").exists()
    scorer = GLMixScorer.load(tmp_path / "m")
    out = scorer.score_table(li[:50].astype(np.int32), ci[:50], learners=learners, courses=courses)
    assert out["learner_id"].dtype == np.int32 and out["course_id"].dtype == np.int64
    assert list(out.columns) == ["learner_id", "course_id", "glmix_logit", "glmix_global",
                                 "glmix_per_learner"]  # fmt: skip
    np.testing.assert_allclose(
        out["glmix_logit"],
        model.predict_logit({k: v.matrix[:50] for k, v in designs.items()},
                            {"learner": li[:50], "course": ci[:50]}),
        rtol=1e-12,
    )  # fmt: skip
    with pytest.raises(KeyError, match="keyed by it"):
        scorer.known("course", ci[:3])
    assert scorer.known("learner", li[:3]).all()


def test_encoder_errors_name_the_callers_ids_not_subset_rows():
    """The scorer encodes only the rows of the entities the pairs name, so an encoder error's
    row numbers and counts are the subset's: the error says so and names the ids there."""
    rng = np.random.default_rng(5)
    learners = pd.DataFrame({"learner_id": np.arange(100, 160), "age": rng.normal(size=60)})
    courses = pd.DataFrame({"course_id": np.arange(20) * 7, "hours": rng.normal(size=20)})
    n = 600
    li, ci, feat, designs = _pairs_and_designs(
        learners, courses, {"numeric": ["age"]}, {"numeric": ["hours"]}, n, rng
    )
    y = (rng.random(n) < 0.5).astype(float)
    model = GLMix(fixed=FixedEffect(l2=1.0)).fit(designs, {"learner": li, "course": ci}, y)
    scorer = GLMixScorer(model, feat)
    bad_l = learners.astype({"age": object})
    bad_l.loc[bad_l["learner_id"] == 151, "age"] = (
        "abc"  # table row 51; row 2 of the subset (table order)
    )
    with pytest.raises(ValueError) as info:
        scorer.score_table([111, 151, 149], [7, 14, 21], learners=bad_l, courses=courses)
    msg = str(info.value)
    assert "learners: the row numbers and counts below are among the 3 of its 60 rows" in msg
    assert "row 2 = learner_id 151" in msg and "1 of 3 rows" in msg  # the encoder's, restated
    assert "courses:" not in msg  # the course table encodes: not named
    assert isinstance(info.value.__cause__, ValueError)  # the encoder's error, chained
    assert "must hold finite numbers" in str(info.value.__cause__)
    assert info.value.__cause__.rows == [2]  # structured: the scorer reads rows, not the text
    bad_c = courses.astype({"hours": object})
    bad_c.loc[bad_c["course_id"] == 14, "hours"] = "x"  # subset row 1 of 2
    with pytest.raises(
        ValueError, match=r"courses: .*among the 2 of its 20 rows.*row 1 = course_id 14"
    ):
        scorer.score_table([111, 151], [7, 14], learners=learners, courses=bad_c)
    # every course named: the rows are the table's own, and it says that instead
    with pytest.raises(
        ValueError, match=r"among all 20 rows of the courses table.*row 2 = course_id 14"
    ):
        scorer.score_table(np.full(20, 111), courses["course_id"], learners=learners, courses=bad_c)


def test_ids_of_any_pandas_kind_score_alike_and_a_kind_mismatch_raises(trained, saved):
    """Categorical and object id columns (an event log's) score as their values; integer ids
    against string tables (1 never matches "1") raise instead of scoring all as unknown."""
    log, _ = trained
    _, scorer = saved
    L, C = log.learners, log.courses
    lid, cid = L["learner_id"].iloc[:4], C["course_id"].iloc[:4]
    want = scorer.score_table(lid.astype("str"), cid.astype("str"), learners=L, courses=C)
    for kind in ("category", object):
        got = scorer.score_table(lid.astype(kind), cid.astype(kind), learners=L, courses=C)
        np.testing.assert_array_equal(got[COLS].to_numpy(), want[COLS].to_numpy())
        assert got.attrs["glmix_unknown"]["learners"] == 0
    np.testing.assert_array_equal(
        scorer.known("learner", lid.astype("category")), scorer.known("learner", lid.astype("str"))
    )
    with pytest.raises(TypeError, match=r"learner_ids are int ids but learners.learner_id are str"):
        scorer.score_table([1, 2], cid.iloc[:2], learners=L, courses=C)
    relabelled = C.assign(course_id=np.arange(len(C)))
    with pytest.raises(TypeError, match=r"course_ids are str ids but courses.course_id are int"):
        scorer.score_table(lid, cid, learners=L, courses=relabelled)
    with pytest.raises(TypeError, match="one kind"):
        scorer.score_table(pd.Series(["L1", 2], dtype=object), cid.iloc[:2], learners=L, courses=C)


def test_the_whole_id_column_is_checked_not_only_the_named_rows(trained, saved):
    log, _ = trained
    _, scorer = saved
    L, C = log.learners, log.courses
    dup = pd.concat([L, L.iloc[:2]], ignore_index=True)  # the pairs name other learners
    with pytest.raises(ValueError, match=r"learners.learner_id: ids must be unique"):
        scorer.score_table(L["learner_id"].iloc[5:7], C["course_id"].iloc[:2], learners=dup,
                           courses=C)  # fmt: skip


def test_unseen_feature_values_are_counted_and_a_recoded_column_raises(trained, saved):
    log, _ = trained
    _, scorer = saved
    L, C = log.learners, log.courses
    lid, cid = L["learner_id"].iloc[:40], C["course_id"].iloc[:40]
    clean = scorer.score_table(lid, cid, learners=L, courses=C)
    seg = clean.attrs["glmix_features"]["learners"]["segment"]
    assert seg["rows"] == 40 and seg["unseen"] == 0 and seg["values"] == 40 - seg["missing"]
    one_new = L.copy()
    one_new["segment"] = one_new["segment"].astype("str")
    one_new.loc[one_new.index[0], "segment"] = "brand-new"  # a new segment: scored, counted
    out = scorer.score_table(lid, cid, learners=one_new, courses=C)
    got = out.attrs["glmix_features"]["learners"]["segment"]
    assert got["unseen"] == 1 and got["unseen_examples"] == ["brand-new"]
    # the column recoded (codes for labels, upper case): nothing matches, so it raises
    with pytest.raises(ValueError, match=r"learners.segment: none of its .* seen in training"):
        scorer.score_table(lid, cid, learners=L.assign(segment=L["segment"].cat.codes), courses=C)
    upper = C.assign(category=C["category"].astype("str").str.upper())
    with pytest.raises(ValueError, match=r"courses.category: none of its"):
        scorer.score_table(lid, cid, learners=L, courses=upper)


def test_unseen_values_warn_once_per_column_for_a_caller_scoring_in_chunks(trained, saved, caplog):
    """The blend scores chunk by chunk: one warning per column, later ones at DEBUG."""
    log, _ = trained
    scorer = GLMixScorer.load(saved[0])  # a fresh scorer: nothing logged yet
    L, C = log.learners, log.courses
    new = L.assign(segment=L["segment"].astype("str"))
    new.loc[new.index[:3], "segment"] = "brand-new"
    caplog.set_level(logging.DEBUG, logger="glmix.scorer")
    for lo in (0, 1, 2):  # three chunks, each naming a learner with the new segment
        scorer.score_table(L["learner_id"].iloc[lo : lo + 5], C["course_id"].iloc[:5],
                           learners=new, courses=C)  # fmt: skip
    said = [r.levelname for r in caplog.records if "unseen in training" in r.getMessage()]
    assert said == ["WARNING", "DEBUG", "DEBUG"]


def test_a_missing_feature_column_names_its_table(trained, saved):
    log, _ = trained
    _, scorer = saved
    L, C = log.learners, log.courses
    lid, cid = L["learner_id"].iloc[:2], C["course_id"].iloc[:2]
    with pytest.raises(KeyError, match=r"courses: the row numbers .*'language'"):
        scorer.score_table(lid, cid, learners=L, courses=C.drop(columns="language"))


def test_a_corrupt_folder_says_which_file_and_what(saved, tmp_path):

    from glmix.io import CorruptFolderError

    path, _ = saved

    def copy(name):
        out = tmp_path / name
        shutil.copytree(path, out)
        return out

    trunc = copy("truncated")
    (trunc / "arrays.npz").write_bytes((trunc / "arrays.npz").read_bytes()[:100])
    with pytest.raises(CorruptFolderError, match=r"truncated/arrays.npz: unreadable"):
        GLMixScorer.load(trunc)
    bad_json = copy("json")
    (bad_json / "scorer.json").write_text("{not json")
    with pytest.raises(CorruptFolderError, match=r"json/scorer.json: unreadable"):
        GLMixScorer.load(bad_json)
    for name, change, message in (
        ("narrow", lambda z: z.update({"per_course.coef": z["per_course.coef"][:, :-1]}),
         r"per_course.coef has shape \(\d+, \d+\), expected"),
        ("ids", lambda z: z.update({"per_learner.ids": z["per_learner.ids"][:-1]}),
         r"per_learner.coef has shape"),
        ("nan", lambda z: z["global.coef"].__setitem__(0, np.nan),
         r"global.coef holds 1 non-finite"),
        ("lacking", lambda z: z.pop("per_course.coef"), r"lack 'per_course.coef'"),
    ):  # fmt: skip
        folder = copy(name)
        with np.load(folder / "arrays.npz") as f:
            arrays = {k: f[k] for k in f.files}
        change(arrays)
        np.savez(folder / "arrays.npz", **arrays)
        with pytest.raises(CorruptFolderError, match=message):
            GLMixScorer.load(folder)
