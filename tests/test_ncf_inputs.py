"""ncf.inputs and ncf.bags: what the towers see, its weights, leakage, and the denoising split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from ncf.bags import csr_bags
from ncf.inputs import InputBuilder, history_matrix, normalize_rows, split_history
from watchlog.cleaning import CleaningConfig, clean
from watchlog.eventlog import ts_ns, utc_ns
from watchlog.splits import temporal_split


def _events(**columns) -> pd.DataFrame:
    n = len(columns["learner_idx"])
    base = {
        "ts": pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC"),
        "watch_seconds": np.full(n, 600.0),
    }
    return pd.DataFrame({**base, **columns})


def test_history_weightings():
    ev = _events(
        learner_idx=[0, 0, 0, 1], course_idx=[0, 0, 2, 1], watch_seconds=[60.0, 120.0, 600.0, 0.0]
    )
    binary = history_matrix(ev, (2, 3)).toarray()
    assert binary.tolist() == [[1, 0, 1], [0, 1, 0]]  # repeated watches of a pair count once
    logw = history_matrix(ev, (2, 3), weighting="log_watch").toarray()
    np.testing.assert_allclose(logw[0], [np.log1p(3.0), 0, np.log1p(10.0)], rtol=1e-6)
    rec = history_matrix(
        ev, (2, 3), weighting="recency", half_life_days=1.0, reference_time="2024-01-05"
    )
    # latest watch of (0, 0) is day 2 (Jan 2): 3 days before the reference -> 0.5 ** 3
    assert rec[0, 0] == pytest.approx(0.125) and rec[1, 1] == pytest.approx(0.5)
    col = history_matrix(ev.assign(r=[1, 4, 2, 3]), (2, 3), weighting="column", weight_column="r")
    assert col[0, 0] == 4 and col[1, 1] == 3  # max over the pair's events


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_nan_or_negative_weights_are_rejected_with_counts(bad):
    ev = _events(learner_idx=[0, 1, 1], course_idx=[0, 1, 2]).assign(r=[1.0, bad, bad])
    with pytest.raises(ValueError, match=r"weight column 'r'.*2 of 3 .*event rows \[1, 2\]"):
        history_matrix(ev, (2, 3), weighting="column", weight_column="r")
    ev = ev.assign(watch_seconds=[1.0, bad, 5.0])
    with pytest.raises(ValueError, match=r"watch_seconds.*1 of 3"):
        history_matrix(ev, (2, 3), weighting="log_watch")


def test_normalize_rows_and_empty_rows():
    m = sp.csr_matrix(np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [4.0, 0.0, 0.0]], np.float32))
    assert normalize_rows(m, "mean").toarray().tolist() == [[0.25, 0.75, 0], [0, 0, 0], [1, 0, 0]]
    np.testing.assert_allclose(
        normalize_rows(m, "sqrt")[0].toarray(), [[1 / 2**0.5, 3 / 2**0.5, 0]]
    )
    with pytest.raises(ValueError, match="normalize"):
        normalize_rows(m, "l2")


def test_split_history_is_a_disjoint_partition_and_seeded():
    m = sp.random(50, 40, density=0.3, format="csr", dtype=np.float32, random_state=0)
    a, b = split_history(m, 0.5, np.random.default_rng(3))
    assert a.multiply(b).nnz == 0
    assert abs(a + b - m).sum() == 0
    assert 0.4 < b.nnz / m.nnz < 0.6
    a2, _ = split_history(m, 0.5, np.random.default_rng(3))
    assert (a2 != a).nnz == 0


def test_bags_match_csr_rows_and_gather_on_device():
    m = sp.random(30, 20, density=0.2, format="csr", dtype=np.float32, random_state=1)
    rows = np.array([5, 0, 29, 5])
    table = torch.randn(20, 4)
    bags = csr_bags(m, rows)
    pooled = torch.nn.functional.embedding_bag(
        bags.indices, table, bags.offsets, mode="sum", per_sample_weights=bags.weights
    )
    dense = torch.from_numpy(m[rows].toarray()) @ table
    torch.testing.assert_close(pooled, dense)
    sub = csr_bags(m).rows(torch.tensor(rows))
    again = torch.nn.functional.embedding_bag(
        sub.indices, table, sub.offsets, mode="sum", per_sample_weights=sub.weights
    )
    torch.testing.assert_close(again, dense)


def test_snapshot_respects_the_cutoff(small_platform):
    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = temporal_split(log, valid_days=30, test_days=30)
    snap = InputBuilder(lookback_days=90).snapshot(log, split.test)
    ev = log.events
    ts = ts_ns(ev["ts"])
    watched = ev["watched"].to_numpy()
    cut, end = utc_ns(split.test.cutoff), utc_ns(split.test.label_end)
    start = utc_ns(split.test.cutoff - pd.Timedelta(days=90))
    # history = watched pairs inside [cutoff - 90 days, cutoff); nothing at or after the cutoff
    win = ev[watched & (ts >= start) & (ts < cut)]
    expect = set(zip(win["learner_idx"], win["course_idx"], strict=True))
    got = set(zip(*snap.history.nonzero(), strict=True))
    assert got == expect
    # labels: watched in [cutoff, end), minus courses seen before the cutoff
    lab = ev[watched & (ts >= cut) & (ts < end)]
    before = ev[watched & (ts < cut)]
    seen = set(zip(before["learner_idx"], before["course_idx"], strict=True))
    want = set(zip(lab["learner_idx"], lab["course_idx"], strict=True)) - seen
    assert set(zip(*snap.labels.nonzero(), strict=True)) == want
    assert set(zip(*snap.seen.nonzero(), strict=True)) == seen
    assert snap.course_bags.shape == (log.n_courses, log.n_courses)
    assert snap.course_bags.diagonal().sum() == 0  # neighbours only (self_weight=0)
    assert (np.diff(snap.course_bags.indptr) <= 50).all()


def test_snapshot_without_watched_flag_is_an_error(small_platform):
    split = temporal_split(small_platform.log, valid_days=30, test_days=30)
    with pytest.raises(ValueError, match="watched"):
        InputBuilder().snapshot(small_platform.log, split.test)


def test_datamodule_rolling_cutoffs_and_refit_move_forward(small_platform):
    from ncf.datamodule import NCFDataModule

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = temporal_split(log, valid_days=30, test_days=30)
    dm = NCFDataModule(
        log, split, InputBuilder(lookback_days=90), training="rolling", n_cutoffs=3, spacing_days=10
    )
    dm.setup()
    cutoffs = [s.cutoff for s in dm.train_snapshots]
    # labels of every training cutoff end by the validation cutoff (30-day horizon)
    assert max(cutoffs) == split.valid.cutoff - pd.Timedelta(days=30)
    assert cutoffs == sorted(cutoffs, reverse=True) and len(set(cutoffs)) == 3
    refit = dm.for_refit()
    assert [s.cutoff for s in refit.train_snapshots] == [c + pd.Timedelta(days=30) for c in cutoffs]
    assert max(s.cutoff for s in refit.train_snapshots) + pd.Timedelta(days=30) == split.test.cutoff
    assert refit.test is dm.test and dm.train_snapshots[0].name == "train_0"
    assert refit.train_snapshots[0].name == "refit_train_0"


def test_too_many_rolling_cutoffs_name_the_settings_to_change(small_platform):
    from ncf.datamodule import NCFDataModule

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = temporal_split(log, valid_days=30, test_days=30)
    dm = NCFDataModule(log, split, InputBuilder(), training="rolling", n_cutoffs=100)
    with pytest.raises(ValueError, match=r"before the valid cutoff: rolling_folds: cutoff .* "
                                         r"n_cutoffs=100, .*ncf.datamodule.n_cutoffs"):  # fmt: skip
        dm.setup()


def test_a_log_without_watches_is_refused_at_setup_saying_why(small_platform):
    """Every watch below the threshold (e.g. a log without watch times): the datamodule says
    what a watch is and which setting to change, not a teacher or checkpoint error later."""
    from ncf.datamodule import NCFDataModule

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=10**9))
    split = temporal_split(log, valid_days=30, test_days=30)
    dm = NCFDataModule(log, split, InputBuilder(), training="rolling", n_cutoffs=2)
    with pytest.raises(ValueError, match=r"holds no watched course.*0 watched events.*"
                                         r"min_watch_seconds"):  # fmt: skip
        dm.setup()


def test_datamodule_denoising_trains_on_training_pairs_only(small_platform):
    from ncf.datamodule import NCFDataModule
    from watchlog.splits import stratified_split

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = stratified_split(log, log.select("watched"), test_ratio=0.25, valid_ratio=0.1)
    dm = NCFDataModule(log, split, InputBuilder())
    dm.setup()
    assert dm.training == "denoising" and dm.train_snapshots == [dm.valid]
    # training history never holds a validation or test pair
    assert dm.valid.history.multiply(dm.valid.labels).nnz == 0
    assert dm.valid.history.multiply(dm.test.labels).nnz == 0
    assert dm.for_refit().train_snapshots == [dm.test]  # training + validation pairs
    assert dm.test.history.multiply(dm.test.labels).nnz == 0


def test_rolling_plus_denoising_adds_the_history_at_the_cutoff(small_platform):
    from ncf.batches import TrainBatches
    from ncf.datamodule import NCFDataModule

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = temporal_split(log, valid_days=30, test_days=30)
    dm = NCFDataModule(
        log, split, InputBuilder(lookback_days=90), training="rolling+denoising",
        n_cutoffs=2, spacing_days=10, batch_size=32,
    )  # fmt: skip
    dm.setup()
    assert [s.name for s in dm.train_snapshots] == ["train_0", "train_1", "valid"]
    assert dm.denoise_flags(dm.train_snapshots) == [False, False, True]
    assert [s.name for s in dm.for_refit().train_snapshots][-1] == "test"
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader().dataset)
    valid_labels = dm.valid.labels
    for b in batches:  # a denoising batch's labels come from its history, never the future
        if b["course_bags"].key == "course_bags/valid":
            rows = b["learners"].numpy()
            lab = np.zeros((len(rows), log.n_courses), bool)
            lab[b["labels"].bag_of_entry().numpy(), b["labels"].indices.numpy()] = True
            assert not (lab & (valid_labels[rows].toarray() > 0)).any()
            assert (lab <= (dm.valid.history[rows].toarray() > 0)).all()
    assert isinstance(dm.train_dataloader().dataset, TrainBatches)


def test_inference_snapshot_matches_the_test_inputs(small_platform):
    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = temporal_split(log, valid_days=30, test_days=30)
    builder = InputBuilder(lookback_days=90)
    at_test = builder.snapshot(log, split.test)
    serve = builder.inference_snapshot(log, split.test.cutoff)
    assert serve.labels is None and serve.cutoff == split.test.cutoff
    for part in ("history", "seen", "course_bags"):
        assert (getattr(serve, part) != getattr(at_test, part)).nnz == 0


def test_courses_watched_before_the_lookback_are_masked_in_training_not_negatives(small_platform):
    """Evaluation removes every course seen before the cutoff; training batches carry those
    outside the lookback window (`older`) with the inputs, so no loss counts them as negatives."""
    from ncf.batches import TrainBatches, older

    log = clean(small_platform.log, CleaningConfig(min_watch_seconds=60))
    split = temporal_split(log, valid_days=30, test_days=30)
    short = InputBuilder(lookback_days=30).snapshot(log, split.valid)
    old = older(short)
    seen = set(zip(*short.seen.nonzero(), strict=True))
    hist = set(zip(*short.history.nonzero(), strict=True))
    assert old is not None and set(zip(*old.nonzero(), strict=True)) == seen - hist
    assert len(seen - hist) > 0
    # a lookback covering the whole log: nothing older, the history alone is the mask
    assert older(InputBuilder().snapshot(log, split.valid)) is None

    batches = list(TrainBatches([short], batch_size=64, seed=0))
    for b in batches:
        rows = b["learners"].numpy()
        known = np.zeros((len(rows), log.n_courses), bool)
        known[b["known"].bag_of_entry().numpy(), b["known"].indices.numpy()] = True
        want = (short.seen[rows].toarray() > 0) | (short.history[rows].toarray() > 0)
        np.testing.assert_array_equal(known, want)
        assert b["known_full"] is None  # no teacher: no distillation on the full history
    long = TrainBatches([InputBuilder().snapshot(log, split.valid)], batch_size=64, seed=0)
    assert all(b["known"] is None for b in long)


def test_a_watched_pair_never_gets_weight_zero():
    # pair (1, 1): a 0-second watch (passes a 0-second threshold), ~200 days before the
    # reference (recency underflows float32 past ~126 half-lives), a 0 in the weight column
    ev = _events(learner_idx=[0, 1], course_idx=[0, 1], watch_seconds=[600.0, 0.0])
    ev = ev.assign(ts=pd.to_datetime(["2024-07-20", "2024-01-01"], utc=True), r=[2.0, 0.0])
    for weighting in ("log_watch", "recency", "column"):
        m = history_matrix(
            ev, (2, 2), weighting=weighting, weight_column="r", half_life_days=1.0,
            reference_time="2024-07-21",
        )  # fmt: skip
        assert m.nnz == 2 and (m.data > 0).all(), weighting
    logw = history_matrix(ev, (2, 2), weighting="log_watch")
    assert logw[1, 1] == pytest.approx(np.log1p(1 / 60))  # as if watched for one second


def _tiny_log(watch_seconds, days):
    events = pd.DataFrame(
        {
            "learner_id": [1, 1, 2, 2, 3, 3],
            "course_id": [10, 11, 10, 11, 12, 10],
            "ts": pd.to_datetime(days, utc=True),
            "watch_seconds": watch_seconds,
            "clicked": 1,
            "impression": True,
        }
    )
    from watchlog import EventLog

    return clean(EventLog.from_tables(events), CleaningConfig(min_watch_seconds=0))


def test_zero_second_label_is_kept_with_log_watch_and_counted():
    from watchlog import DataReport

    log = _tiny_log(
        [100.0, 100.0, 100.0, 100.0, 0.0, 300.0],
        ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04", "2020-01-11", "2020-01-12"],
    )
    split = temporal_split(log, test_start="2020-01-10", end="2020-01-20")
    counts = {}
    for weighting in ("none", "log_watch"):
        report = DataReport()
        snap = InputBuilder(label_weighting=weighting).snapshot(log, split.test, report=report)
        step = next(s for s in report.steps if s["step"].startswith("ncf labels"))
        counts[weighting] = (snap.labels.nnz, step["rows_before"], step["removed"])
        assert (snap.labels.data > 0).all()
    # learner 3's 0-second watch of course 12 is a label either way; learner 3's course 10 too
    assert counts["log_watch"] == counts["none"] == (2, 2, 0)


def test_old_watches_stay_in_the_history_and_the_cowatch_bags_with_recency():
    log = _tiny_log(
        100.0, ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04", "2020-07-20", "2020-08-05"]
    )
    split = temporal_split(log, test_start="2020-07-25", end="2020-08-10")
    snaps = {
        w: InputBuilder(lookback_days=365, weighting=w, half_life_days=1).snapshot(log, split.test)
        for w in ("binary", "recency")
    }
    # courses 10 and 11, co-watched ~200 half-lives before the cutoff, are still co-watched
    assert snaps["recency"].history.nnz == snaps["binary"].history.nnz == 5
    assert (snaps["recency"].history.data > 0).all()
    assert (snaps["recency"].course_bags != snaps["binary"].course_bags).nnz == 0
    assert snaps["binary"].course_bags.nnz == 2


@pytest.mark.parametrize("days", [0, -5, float("nan"), float("inf"), "30", True])
def test_lookback_days_must_be_positive_days(days):
    with pytest.raises(ValueError, match=r"lookback_days \(ncf.inputs.lookback_days\): must be"):
        InputBuilder(lookback_days=days)


def test_lookback_days_accepts_none_and_positive_numbers():
    for days in (None, 1, 0.5, np.int64(30), np.float32(7.0)):
        assert InputBuilder(lookback_days=days).lookback_days == days


def test_inference_snapshot_of_an_empty_log_says_so(small_platform):
    log = clean(small_platform.log)
    empty = log.with_events(log.events.iloc[:0])
    for cutoff in (None, "2024-06-01"):
        with pytest.raises(ValueError, match="inference_snapshot: the event log has no events"):
            InputBuilder().inference_snapshot(empty, cutoff)
