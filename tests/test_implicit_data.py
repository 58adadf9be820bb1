"""Data as a new user brings it: implicit events (plays, watches) with no impressions, every
event at one timestamp. The splits say which split fits; leave-latest-out refuses to let file
order pick labels unless told how; GLMix says there are no impressions and can train on
sampled negatives; the pipeline runs to its end with a stage it cannot run skipped."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from glmix.rows import NoTrainingRows, row_sets, sample_negatives
from watchlog import DataReport, EventLog
from watchlog.cleaning import clean
from watchlog.splits import (
    assert_no_leakage,
    leave_latest_out,
    stratified_split,
    temporal_split,
    time_ties,
)

ONE_INSTANT = pd.Timestamp("2011-01-01", tz="UTC")


def implicit_events(platform) -> pd.DataFrame:
    """The platform's watches as a Last.fm-like table: one row per (learner, course), watch
    time summed, every row at one instant, no impressions, no click column."""
    ev = platform.log.events
    w = ev[ev["watch_seconds"] > 0]
    g = (
        w.groupby(["learner_id", "course_id"], observed=True, sort=False)["watch_seconds"]
        .sum()
        .reset_index()
    )
    return pd.DataFrame(
        {
            "learner_id": g["learner_id"].astype(str),
            "course_id": g["course_id"].astype(str),
            "ts": ONE_INSTANT,
            "watch_seconds": g["watch_seconds"].to_numpy(),
            "clicked": pd.array([pd.NA] * len(g), dtype="Int8"),
            "impression": False,
        }
    )


@pytest.fixture(scope="module")
def implicit_log(small_platform):
    p = small_platform.log
    learners = p.learners.assign(learner_id=p.learners["learner_id"].astype(str))
    courses = p.courses.assign(course_id=p.courses["course_id"].astype(str))
    return clean(EventLog.from_tables(implicit_events(small_platform), learners, courses))


# ---- item 2: ties in time ---------------------------------------------------------------------
def test_temporal_split_on_one_instant_names_the_splits_that_fit(implicit_log):
    assert time_ties(implicit_log.events)["few_timestamps"]
    with pytest.raises(ValueError) as err:
        temporal_split(implicit_log, valid_days=45, test_days=45, blend_days=45)
    text = str(err.value)
    assert "100% of the" in text and "share 1 timestamp(s)" in text  # the rule, the counts
    assert "split=stratified" in text and "split=random" in text  # the fix


def test_temporal_split_that_is_too_short_still_points_at_the_untimed_splits(small_platform):
    log = clean(small_platform.log)
    assert not time_ties(log.events)["few_timestamps"]
    with pytest.raises(ValueError, match=r"first event .* the events span .* split=stratified"):
        temporal_split(log, valid_days=200, test_days=200)


def test_leave_latest_out_refuses_tied_labels_with_counts_examples_and_the_fix(implicit_log):
    w = implicit_log.select("watched")
    counts = np.bincount(w["learner_idx"], minlength=implicit_log.n_learners)
    with pytest.raises(ValueError) as err:
        leave_latest_out(implicit_log, w)
    text = str(err.value)
    # every learner with a test label has it chosen among events at one instant
    assert f"{int((counts >= 2).sum()):,} learners' test label" in text
    assert "events at its latest timestamp" in text  # examples
    assert "split.fn.ties=random" in text and "split=stratified" in text  # the fixes


def test_leave_latest_out_random_ties_are_seeded_counted_and_leak_free(implicit_log):
    w = implicit_log.select("watched")
    report = DataReport()
    a = leave_latest_out(implicit_log, w, ties="random", seed=1, report=report)
    b = leave_latest_out(implicit_log, w, ties="random", seed=1)
    c = leave_latest_out(implicit_log, w, ties="random", seed=2)
    assert a.test.labels.index.equals(b.test.labels.index)
    assert not a.test.labels.index.equals(c.test.labels.index)
    for fold in a.folds():
        assert_no_leakage(fold)
        assert not fold.inputs.index.isin(fold.labels.index).any()
    n_tied = a.params["learners_with_tied_test_label"]
    assert n_tied == a.test.labels["learner_idx"].nunique() > 0
    assert f"{n_tied:,} learners' test label" in report.notes[-1] and "seed 1" in report.notes[-1]
    # file order would pick the same label for every learner; the draw differs from it
    order = leave_latest_out(implicit_log, w, ties="order")
    assert not order.test.labels.index.equals(a.test.labels.index)


def test_leave_latest_out_rejects_an_unknown_tie_rule(implicit_log):
    with pytest.raises(ValueError, match=r"ties must be one of \('error', 'order', 'random'\)"):
        leave_latest_out(implicit_log, ties="first")


# ---- item 3: GLMix without impressions ---------------------------------------------------------
@pytest.fixture(scope="module")
def implicit_split(implicit_log):
    return stratified_split(implicit_log, implicit_log.select("watched"), valid_ratio=0.1)


def test_glmix_rows_say_at_once_that_there_are_no_impressions(implicit_split):
    with pytest.raises(NoTrainingRows) as err:
        row_sets(implicit_split)
    text = str(err.value)
    assert "the data has no impressions" in text
    assert "glmix.rows.negatives=sampled" in text and "stages.glmix=false" in text


def test_sampled_negatives_keep_the_ratio_are_seeded_and_never_a_seen_pair(
    implicit_log, implicit_split
):
    report = DataReport()
    kw = dict(negatives="sampled", negative_ratio=3, log=implicit_log)
    rows = row_sets(implicit_split, seed=5, report=report, **kw)
    again = row_sets(implicit_split, seed=5, **kw)
    other = row_sets(implicit_split, seed=6, **kw)
    split = implicit_split
    seen = {
        "train": [split.valid.inputs],
        "valid": [split.valid.inputs, split.valid.labels],
        "test": [split.test.inputs, split.test.labels],
        "refit": [split.test.inputs],
    }
    for name, r in rows.items():
        pos, neg = r.events[r.y == 1], r.events[r.y == 0]
        assert len(neg) == 3 * len(pos) > 0  # the catalogue (300 courses) never runs out here
        per_learner = neg.groupby("learner_idx").size()
        assert (per_learner == 3 * pos.groupby("learner_idx").size()).all()
        key = lambda f: set(zip(f["learner_idx"], f["course_idx"], strict=True))  # noqa: E731
        assert not key(neg) & set().union(*(key(f) for f in seen[name]))
        assert len(key(neg)) == len(neg)  # each negative pair once
        assert r.events.equals(again[name].events)
        assert not r.events.equals(other[name].events)
    step = next(s for s in report.steps if s["step"] == "glmix test rows")
    assert (
        step["sampled_negatives"] == 3 * step["positive_pairs"] == int((rows["test"].y == 0).sum())
    )


def test_sample_negatives_stops_at_the_catalogue():
    # learner 0 has seen 8 of 10 courses: 2 left, whatever the ratio; learner 1 has seen none
    excluded = np.sort(np.array([0 << 32 | c for c in range(8)], dtype=np.int64))
    rng = np.random.default_rng(0)
    learner, course = sample_negatives(np.array([0, 0, 1]), excluded, 10, 4.0, rng)
    assert sorted(course[learner == 0].tolist()) == [8, 9]
    assert (learner == 1).sum() == 4 and len(set(course[learner == 1].tolist())) == 4


def test_glmix_trains_on_sampled_negatives(implicit_log, implicit_split):
    from hydra import compose, initialize_config_dir

    from experiments.train_glmix import featurizer_from
    from glmix import GLMix, fit_on_split
    from tests.test_pipeline import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        g = compose("train_glmix").glmix
    from hydra.utils import instantiate

    trained = fit_on_split(
        implicit_log, implicit_split, model=instantiate(g.model, _convert_="all"),
        featurizer=featurizer_from(g, 0, implicit_log), negatives="sampled", negative_ratio=2,
        seed=0,
    )  # fmt: skip
    m = trained.metrics
    assert m["rows"]["test"]["sampled_negatives"] == 2 * m["rows"]["test"]["positives"]
    assert m["test"]["auc"] > 0.6  # watched pairs rank above random unwatched ones
    assert isinstance(trained.selected, GLMix)


# ---- the pipeline on such data ------------------------------------------------------------------
@pytest.mark.slow
def test_pipeline_runs_to_the_end_with_glmix_skipped(tmp_path, caplog):
    from experiments.pipeline import run
    from tests.test_pipeline import compose_cfg
    from watchlog.synthetic import generate_platform

    platform = generate_platform(n_learners=500, n_courses=120, n_days=200, seed=7)
    events = implicit_events(platform).drop(columns=["impression"])
    events["clicked"] = 1  # as real play logs have it: every watch a click
    events.to_parquet(tmp_path / "events.parquet")
    out = tmp_path / "run"
    cfg = compose_cfg(
        out, "data=tables", f"data.source.events.path={tmp_path / 'events.parquet'}",
        "split=stratified", "stages.ncf=true", "stages.glmix=true", "stages.blend=true",
        "stages.export=true", "stages.report=false", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "outputs.plot_method=pca", "threads=1",
        "blend.n_boot=200", f"export.sink.path={out / 'lists'}",
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        metrics = run(cfg)
    assert "the data has no impressions" in metrics["skipped"]["glmix"]
    summary = next(r.getMessage() for r in caplog.records if "run summary" in r.getMessage())
    assert "skipped glmix: GLMix: the data has no impressions" in summary
    assert "glmix.rows.negatives=sampled" in summary
    assert metrics["export"]["rows"] > 0  # blend and export ran without GLMix
    stage = json.loads((out / "glmix" / "stage.json").read_text())
    assert stage["status"] == "skipped"
    # item 8: no language or category: the course map is drawn by popularity, and the empty
    # embedding quality says why in the log
    assert (out / "ncf" / "plots" / "courses_pca_popularity.png").exists()
    assert json.loads((out / "ncf" / "metrics.json").read_text())["embedding_quality"] == {}
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "embedding quality: none measured; the catalogue has no categorical column" in logged
    assert "course map: coloured by popularity only" in logged


def test_missing_feature_columns_leave_the_specs_and_every_design_term_using_them():
    from experiments.train_glmix import _without_columns

    specs = {
        "learner": {"categorical": ["segment", "language"], "multi_hot": ["skills"],
                    "numeric": [], "scaled": None},
        "course": {"categorical": ["language", "category"], "multi_hot": [],
                   "numeric": ["duration_seconds"], "scaled": {"x": 2.0, "y": 1.0}},
    }  # fmt: skip
    terms = {
        "global_terms": ["learner", "course"],
        "crosses": [["learner.language", "course.language"]],
        "coordinates": {"per_learner": ["course.category", "course.language"],
                        "per_course": ["learner.segment"]},
    }  # fmt: skip
    got_specs, got_terms = _without_columns(specs, terms, {"course.language", "course.x"})
    assert got_specs["learner"] == specs["learner"]
    assert got_specs["course"]["categorical"] == ["category"]
    assert got_specs["course"]["numeric"] == ["duration_seconds"]
    assert got_specs["course"]["scaled"] == {"y": 1.0}
    assert got_terms == {
        "global_terms": ["learner", "course"],
        "crosses": [],  # the cross used course.language
        "coordinates": {"per_learner": ["course.category"], "per_course": ["learner.segment"]},
    }
