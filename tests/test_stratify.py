"""The stratified split reproduces Microsoft recommenders' python_stratified_split pair for pair.

The reference is tests/fixtures/recommenders_stratified_split.csv, written by
tests/fixtures/make_recommenders_split.py with recommenders 1.2.1 (these tests never import
the library).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from watchlog import DataReport, EventLog
from watchlog.cleaning import clean
from watchlog.loaders import RatingProxy, load_movielens_100k, ratings_to_events
from watchlog.splits import assert_no_leakage, stratified_split
from watchlog.stratify import cumulative_ratios, recommenders_parts

FIXTURE = Path(__file__).parent / "fixtures" / "recommenders_stratified_split.csv"
SEEDS = (42, 7)
BY = {"user": "learner", "item": "course"}


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.read_csv(FIXTURE)


@pytest.fixture(scope="module")
def log(reference) -> EventLog:
    """The fixture's ratings as an event log; `source_row` keeps the library's row order."""
    events = ratings_to_events(
        reference["userID"],
        reference["itemID"],
        reference["rating"],
        reference["timestamp"],
        RatingProxy(),
    )
    log = EventLog.from_tables(events, ts_unit="s")
    # sorting by time moved the rows: the reference's row order survives only in source_row
    assert not (log.events["source_row"].to_numpy() == np.arange(len(reference))).all()
    return log


def _flags(fold_labels: pd.DataFrame, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=int)
    out[fold_labels["source_row"].to_numpy()] = 1
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group", ["user", "item"])
def test_stratified_split_reproduces_the_library(reference, log, seed, group):
    split = stratified_split(log, test_ratio=0.25, valid_ratio=0.1, seed=seed, by=BY[group])
    n = len(reference)
    np.testing.assert_array_equal(
        _flags(split.test.labels, n), reference[f"test_{group}_s{seed}"].to_numpy()
    )
    # validation: the library called again on its own training output, ratio 0.9, same seed
    np.testing.assert_array_equal(
        _flags(split.valid.labels, n), reference[f"valid_{group}_s{seed}"].to_numpy()
    )
    for fold in split.folds():
        assert_no_leakage(fold)
    assert split.params["draw"] == "recommenders" and split.params["input_order"] == "source_row"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group", ["user", "item"])
def test_recommenders_parts_with_a_ratio_list(reference, seed, group):
    codes = pd.factorize(reference[f"{group}ID"], sort=True)[0]
    part, order = recommenders_parts(codes, seed, [0.65, 0.1, 0.25])
    np.testing.assert_array_equal(part, reference[f"multi_{group}_s{seed}"].to_numpy())
    # the output order is sorted by group, as the library returns its frames
    assert (np.diff(codes[order]) >= 0).all()


def test_without_source_row_the_draw_follows_time_order(reference, log):
    """Another input order is another split, and the report says which order was used."""
    report = DataReport()
    by_time = stratified_split(
        log.with_events(log.events.drop(columns="source_row")), seed=42, report=report
    )
    assert by_time.params["input_order"] == "time"
    assert any("no source_row column" in note for note in report.notes)
    test_rows = log.events.loc[by_time.test.labels.index, "source_row"]
    flags = _flags(pd.DataFrame({"source_row": test_rows}), len(reference))
    assert (flags != reference["test_user_s42"].to_numpy()).any()
    # the same seed and input give the same split
    a, b = stratified_split(log, seed=42), stratified_split(log, seed=42)
    assert a.test.labels.index.equals(b.test.labels.index)


def test_rounding_is_half_to_even_per_group():
    # groups of 2, 6 and 10 at 0.75: 1.5 -> 2, 4.5 -> 4, 7.5 -> 8 training rows
    group = np.repeat([0, 1, 2], [2, 6, 10])
    part, _ = recommenders_parts(group, 0, 0.75)
    np.testing.assert_array_equal(np.bincount(group[part == 0]), [2, 4, 8])


def test_cumulative_ratios_match_the_library():
    np.testing.assert_array_equal(cumulative_ratios(0.75), [0.75, 1.0])
    np.testing.assert_allclose(cumulative_ratios([2, 1, 1]), [0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="> 0"):
        cumulative_ratios([0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        cumulative_ratios(1.5)


def test_bad_draw_and_grouping_are_named(log):
    with pytest.raises(ValueError, match="draw must be one of .*split.fn.draw"):
        stratified_split(log, draw="sklearn")
    with pytest.raises(ValueError, match="filter_by='item' is by=course"):
        stratified_split(log, by="item")


def test_repeated_pairs_stay_whole_and_follow_their_first_event(log):
    """A repeated pair goes where the library would put it in the frame without repeats."""
    ev = log.events
    repeat = ev.iloc[[0, 5]].assign(
        ts=ev["ts"].iloc[-1] + pd.Timedelta(seconds=1),
        source_row=[len(ev), len(ev) + 1],
    )  # two later events of existing pairs, at the end of the input
    doubled = pd.concat([ev, repeat], ignore_index=True)
    split = stratified_split(log.with_events(doubled), seed=42, valid_ratio=0.1)
    for fold in split.folds():
        assert_no_leakage(fold)
    base = stratified_split(log, seed=42, valid_ratio=0.1)
    got = split.test.labels.loc[split.test.labels["source_row"] < len(ev), "source_row"]
    assert sorted(got) == sorted(base.test.labels["source_row"])


@pytest.mark.real_data
def test_movielens_100k_pair_counts(shared_data):
    """The library's counts on u.data (recommenders 1.2.1): 25,008 test pairs per user at
    seed 42 (filter_by="user"), 24,934 per item (filter_by="item", its benchmark notebook)."""
    log = clean(load_movielens_100k(shared_data / "ml-100k"))
    ev = log.select("watched")
    per_user = stratified_split(log, ev, test_ratio=0.25, valid_ratio=0.1, seed=42)
    assert len(per_user.test.labels) == 25_008
    assert len(per_user.valid.labels) == 7_516  # the library again on its 74,992 training rows
    per_item = stratified_split(log, ev, test_ratio=0.25, seed=42, by="course")
    assert len(per_item.test.labels) == 24_934
    ours = stratified_split(log, ev, test_ratio=0.25, seed=42, draw="ours")
    assert len(ours.test.labels) == 25_354
