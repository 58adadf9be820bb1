"""Serving a two-tower with learner ID embeddings (`ncf.model.learner_ids=true`) to learners
that have no ID row: learners new since training (`NCFRecommender.at` on a later log),
learners of the learner table without any event, and ids unknown to the learner table; and
training one: the ID rows of learners without a training row are zero afterwards.

The blend's served lists ask the recommender about every learner of the learner table with
cold_start="empty_history" (`experiments.blend.Models.serving`): a learner new since training
is served from its history with a zero ID vector; one without any history gets the
cold-start vector (empty history bag, zero ID vector) and, through `history_sizes` == 0, the
popular lists of the fallback chain; never an exception. A tiny platform and a
random-initialised model for serving (it does not depend on how good the weights are), a
tiny fit for training."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from blend import CandidateBuilder
from blend.lists import served_lists
from blend.workflow import learner_routes
from evaluation import evaluate_full_ranking
from ncf.bags import csr_bags
from ncf.datamodule import NCFDataModule
from ncf.inputs import InputBuilder
from ncf.model import TwoTower
from ncf.module import NCFModule
from ncf.recommender import NCFRecommender
from ncf.training import fit_and_test
from watchlog.cleaning import CleaningConfig, clean
from watchlog.eventlog import EventLog
from watchlog.idmap import IdMap, UnknownIdError
from watchlog.splits import Fold, temporal_split
from watchlog.synthetic import simulate_tables

NEW_DAYS = 20  # learners whose first event is in the last NEW_DAYS days are new since training
UNKNOWN = "not-in-the-learner-table"


@pytest.fixture(scope="module")
def platform():
    """(the model's log: watches before the training cutoff T; the full log with the whole
    learner table; T; the full log's serving cutoff)."""
    events, learners, courses, _ = simulate_tables(120, 40, n_days=90, seed=3)
    full = clean(EventLog.from_tables(events, learners, courses), CleaningConfig())
    end = full.events["ts"].max().floor("D") + pd.Timedelta(days=1)
    T = end - pd.Timedelta(days=NEW_DAYS)
    ts = pd.to_datetime(events["ts"], utc=True)
    before = events[(ts < T) & (events["watch_seconds"] >= 60)]
    # the model's learner table: learners with a watch before T (derived from the events)
    train = clean(EventLog.from_tables(before, None, courses), CleaningConfig())
    return train, full, T, end


@pytest.fixture(scope="module")
def rec(platform):
    train, _, T, _ = platform
    torch.manual_seed(0)
    model = TwoTower(train.n_learners, train.n_courses, bag_dim=16, mlp=[12, 8],
                     learner_ids=True, course_bias=True)  # fmt: skip
    inputs = InputBuilder(lookback_days=365, cowatch_top_k=10)
    snap = inputs.inference_snapshot(train, T)
    return NCFRecommender(model, snap, train.learner_ids, train.course_ids, inputs=inputs,
                          cold_start="empty_history", device="cpu", chunk_size=16)  # fmt: skip


def cold_vector(model: TwoTower) -> torch.Tensor:
    """The learner tower on an empty bag with a zero ID vector (+ the bias column of ones)."""
    with torch.no_grad():
        v = model.learner_tower.mlp(torch.zeros(1, model.learner_tower.ids.embedding_dim))
    return torch.cat([v, torch.ones(1, 1)], dim=1)


def test_the_platform_has_the_learners_this_is_about(platform, rec):
    train, full, _, _ = platform
    new = ~rec.known_learners(full.learner_ids.index)
    watched = full.events[full.events["watched"]]
    events_of = np.bincount(full.events["learner_idx"], minlength=full.n_learners)
    watches_of = np.bincount(watched["learner_idx"], minlength=full.n_learners)
    assert (new & (events_of == 0)).sum() >= 3  # in the learner table, never in the events
    assert (new & (watches_of > 0)).sum() >= 3  # new since training, with a history now


def test_model_zero_id_vector_for_minus_one():
    torch.manual_seed(1)
    model = TwoTower(5, 7, bag_dim=6, mlp=[4], learner_history=False, learner_ids=True).eval()
    with torch.no_grad():
        out = model.learners(None, torch.tensor([2, -1, 0]))
        rows = model.learner_tower.ids.weight
        expect = model.learner_tower.mlp(torch.stack([rows[2], torch.zeros(6), rows[0]]))
    torch.testing.assert_close(out, expect)


def test_unknown_learners_get_the_cold_start_vector_known_ones_their_id_row(rec):
    known = rec.learner_ids.index[:6].tolist()
    emb = rec.learner_embeddings([*known, "nobody", "nobody-2"])
    torch.testing.assert_close(emb[-2:], cold_vector(rec.model).expand(2, -1))
    # known learners: their history bag plus their own ID row, as before
    idx = np.arange(6)
    before = rec.learner_embeddings_at(idx)
    with torch.no_grad():
        bag = rec.model.learner_tower.bag.weight
        h = rec._history[idx].toarray()
        pooled = torch.from_numpy(h).float() @ bag + rec.model.learner_tower.ids.weight[:6]
        expect = torch.cat([rec.model.learner_tower.mlp(pooled), torch.ones(6, 1)], dim=1)
    torch.testing.assert_close(before, expect, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(emb[:6], before)


def test_every_serving_method_serves_unknown_learners_under_empty_history(rec):
    learners = [rec.learner_ids.index[0], "nobody", "nobody-2"]
    table = rec.recommend_table(learners, N=5)
    assert table.groupby("learner_id").size().to_dict() == {lid: 5 for lid in learners}
    a = table[table["learner_id"] == "nobody"]
    b = table[table["learner_id"] == "nobody-2"]
    assert a["course_id"].tolist() == b["course_id"].tolist()  # one list for every cold start
    np.testing.assert_allclose(
        rec.score(["nobody"] * 5, a["course_id"].tolist()), a["ncf_score"], rtol=1e-6
    )
    stats = rec.score_stats(learners)
    assert np.isfinite(stats[["ncf_mean", "ncf_std", "ncf_logsumexp"]].to_numpy()).all()
    scored = rec.score_table(table, prefix="x", unknown="nan")
    np.testing.assert_allclose(scored["x_score"], table["ncf_score"], rtol=1e-6)
    assert rec.history_sizes(["nobody"]).tolist() == [0]

    # cold_start="error" (the default): unknown ids raise, score_table marks them NaN
    strict = NCFRecommender(rec.model, rec.snapshot, rec.learner_ids, rec.course_ids, device="cpu")
    with pytest.raises(UnknownIdError, match="learner_ids: 2 of 3 ids are unknown"):
        strict.recommend_table(learners, N=5)
    assert np.isnan(strict.score_table(table, unknown="nan")["ncf_score"].iloc[-5:]).all()


def test_at_a_later_cutoff_serves_new_learners_from_their_history(platform, rec):
    """At a later cutoff an ID model serves its own learners with their ID rows (at the same
    indices) and the learners new since training after them, from their history with a zero
    ID vector: what a learner unknown to the model with that history gets. Nothing is left
    out, so nothing is warned about."""
    _, full, _, end = platform
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        later = rec.at(full, end)
    n_model = len(rec.learner_ids)
    assert later.learner_ids.index[:n_model].equals(rec.learner_ids.index)  # ID rows kept
    everyone = full.learner_ids.index
    assert later.known_learners(everyone).all()
    new = everyone[~rec.known_learners(everyone)]
    idx = later.learner_ids.to_index(new).astype(np.int64)
    assert len(new) and (idx >= n_model).all()
    report = later.serving_report
    assert report["new_learners"] == len(new) and report["learner_id_rows"] == n_model
    assert "unknown_learners" not in report and "unknown_learner_watches" not in report
    ts = full.events["ts"]
    watched = full.events[full.events["watched"].to_numpy() & (ts < end).to_numpy()]
    of_new = pd.Index(full.learner_ids.to_ids(watched["learner_idx"])).isin(new)
    assert report["new_learner_watches"] == int(of_new.sum()) > 0  # none lost: all served
    with_history = later.history_sizes(new) > 0
    assert with_history.sum() >= 3
    with torch.no_grad():
        expect = rec.model.learners(csr_bags(later._history, idx), torch.full((len(idx),), -1))
    emb = later.learner_embeddings(new)
    torch.testing.assert_close(emb, expect)
    cold = cold_vector(rec.model)
    assert not torch.isclose(emb[with_history], cold).all(dim=1).any()  # not the cold start
    torch.testing.assert_close(emb[~with_history], cold.expand(int((~with_history).sum()), -1))
    # the model's learners: their history up to the new cutoff plus their own ID row
    old = np.arange(6)
    tower = rec.model.learner_tower
    with torch.no_grad():
        pooled = torch.from_numpy(later._history[old].toarray()).float() @ tower.bag.weight
        mine = torch.cat([tower.mlp(pooled + tower.ids.weight[:6]), torch.ones(6, 1)], dim=1)
    torch.testing.assert_close(later.learner_embeddings_at(old), mine, rtol=1e-5, atol=1e-5)
    table = later.recommend_table(everyone, N=4)
    assert set(table["learner_id"]) == set(everyone)
    assert np.isfinite(later.score_stats(everyone)[["ncf_mean", "ncf_logsumexp"]].to_numpy()).all()
    # ids in neither the model nor the log are still unknown ids
    strict = NCFRecommender(later.model, later.snapshot, later.learner_ids, later.course_ids,
                            device="cpu")  # fmt: skip
    strict.recommend(new[:2], N=3)  # new learners are known to it now
    with pytest.raises(UnknownIdError, match="learner_ids: 1 of 2 ids are unknown"):
        strict.recommend([new[0], UNKNOWN], N=3)


def test_at_recommender_round_trips_through_save_and_load(platform, rec, tmp_path):
    """The extended learner map (the model's ids, then the new ones: not sorted) keeps its
    order through save / load, so old and new learners get the same vectors and lists."""
    _, full, _, end = platform
    later = rec.at(full, end)
    assert len(later.learner_ids) > len(rec.learner_ids)  # the new learners appended
    assert not later.learner_ids.index.is_monotonic_increasing  # so not sorted: order matters
    later.save(tmp_path / "later")
    loaded = NCFRecommender.load(tmp_path / "later", device="cpu")
    assert loaded.learner_ids == later.learner_ids and loaded.serving_report == later.serving_report
    everyone = full.learner_ids.index
    emb = loaded.learner_embeddings(everyone)
    torch.testing.assert_close(emb, later.learner_embeddings(everyone))
    a, b = loaded.recommend(everyone, N=5), later.recommend(everyone, N=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    again = loaded.at(full, end)  # from a loaded, extended map: the model's ids come first
    assert again.learner_ids == later.learner_ids


def test_a_pure_id_model_serves_new_learners_the_cold_start_list(platform):
    """Without a history input (MF) nothing can place a learner without an ID row: it gets the
    cold-start list and `history_sizes` 0 (so the blend's fallback chain gives it the popular
    lists), and a warning counts the watches its vector could not use."""
    train, full, T, end = platform
    torch.manual_seed(0)
    model = TwoTower(train.n_learners, train.n_courses, bag_dim=8, mlp=[], activation="identity",
                     learner_history=False, course_cowatch=False, learner_ids=True,
                     course_ids=True, course_bias=True)  # fmt: skip
    inputs = InputBuilder(lookback_days=365, cowatch_top_k=10)
    mf = NCFRecommender(model, inputs.inference_snapshot(train, T), train.learner_ids,
                        train.course_ids, inputs=inputs, device="cpu")  # fmt: skip
    with pytest.warns(UserWarning, match="no learner-ID row and the model has no history input"):
        later = mf.at(full, end)
    everyone = full.learner_ids.index
    new = everyone[~mf.known_learners(everyone)]
    assert later.serving_report["new_learner_watches"] > 0
    emb = later.learner_embeddings(new)
    with torch.no_grad():
        cold = model.learners(None, torch.tensor([-1]))
    torch.testing.assert_close(emb, cold.expand(len(new), -1))
    assert (later.history_sizes(new) == 0).all()
    old = everyone[mf.known_learners(everyone)]
    assert (later.history_sizes(old) > 0).any()  # learners with an ID row: as before


def test_idmap_ordered_keeps_the_given_order_through_save_and_load(tmp_path):
    ids = IdMap.ordered(pd.Index(["b", "a", "c"], dtype="string"), name="learner_id")
    assert ids.to_index(["a", "b", "c"]).tolist() == [1, 0, 2]
    assert IdMap.load(ids.save(tmp_path / "ids.parquet")) == ids
    with pytest.raises(ValueError, match="distinct"):
        IdMap.ordered(["a", "b", "a"])
    with pytest.raises(ValueError, match="missing"):
        IdMap.ordered(["a", None])


def test_served_lists_of_the_whole_learner_table_serve_new_learners_from_history(platform, rec):
    """What `experiments.blend.write_served_lists` does, chunk by chunk, at the end of the log:
    every learner of the table (and one id the table lacks) gets a list, no exception; learners
    new since training with a history get the blend like the model's own learners, those
    without any history (and the id the table lacks) the popular fallback lists."""
    _, full, _, end = platform
    now = rec.at(full, end)
    events = full.events
    fold = Fold("serve", "temporal", events, events.iloc[:0], end, end)
    builder = CandidateBuilder(n_retrieve=10, n_fallback=10)
    ids = pd.Index([*full.learner_ids.index, UNKNOWN], dtype=full.learner_ids.index.dtype)
    chunks = list(builder.chunks(ids, log=full, fold=fold, retriever=now, learners_per_chunk=50))
    table = pd.concat(chunks, ignore_index=True)
    lists = pd.concat(
        [served_lists(c.assign(s=c["ncf_score"]), "s", 5, route=learner_routes(c)) for c in chunks]
    )
    first = lists[lists["rank"] == 1].set_index("learner_id")["source"]
    assert set(first.index) == set(ids)  # every learner has a list
    everyone = full.learner_ids.index
    new = everyone[~rec.known_learners(everyone)]
    has_history = table.drop_duplicates("learner_id").set_index("learner_id")["has_history"]
    new_with, new_without = new[has_history[new].to_numpy()], new[~has_history[new].to_numpy()]
    assert len(new_with) >= 3 and len(new_without) >= 3
    assert (first[new_with] == "blend").all()  # served from their history
    assert first[new_without].str.startswith("popular_").all()
    assert first[UNKNOWN] == "popular_global"
    with_history = table.loc[table["has_history"], "learner_id"].unique()
    assert len(with_history) and (first[with_history] == "blend").all()


# ---- training: ID rows of learners without a training row --------------------------------------
def rows_with_training_data(dm: NCFDataModule) -> np.ndarray:
    """(n_learners,) bool, computed here from the definition: a learner trains in a snapshot
    when it has labels there (denoised: a history to draw labels from)."""
    out = np.zeros(dm.event_log.n_learners, dtype=bool)
    for snap, denoise in zip(dm.train_snapshots, dm.denoise_flags(dm.train_snapshots), strict=True):
        m = snap.history if denoise else snap.labels
        out[np.diff(m.indptr) > 0] = True
    return out


def train_id_model(platform, out_dir, *, refit: bool):
    """A hybrid (history bag + learner ID embeddings) trained for 2 epochs on the full log,
    split 10 + 10 days before its end: (datamodule, model, TrainResult)."""
    _, full, _, _ = platform
    split = temporal_split(full, valid_days=10, test_days=10)
    inputs = InputBuilder(lookback_days=365, cowatch_top_k=10)
    dm = NCFDataModule(full, split, inputs, n_cutoffs=2, spacing_days=7, batch_size=16, seed=0)
    dm.setup()
    pl.seed_everything(0, verbose=False)
    model = TwoTower(full.n_learners, full.n_courses, bag_dim=16, mlp=[12, 8],
                     learner_ids=True, course_bias=True)  # fmt: skip
    module = NCFModule(model, course_popularity=dm.course_popularity())
    result = fit_and_test(
        dm, module, out_dir, refit=refit,
        trainer_kwargs=dict(accelerator="cpu", max_epochs=2, enable_progress_bar=False),
    )  # fmt: skip
    return dm, model, result


@pytest.fixture(scope="module")
def trained(platform, tmp_path_factory):
    return train_id_model(platform, tmp_path_factory.mktemp("ids"), refit=False)


def test_id_rows_of_learners_without_a_training_row_are_zero_after_training(platform, trained):
    """A learner with an ID row but no training row (no labels in any training snapshot, e.g.
    in the learner table without a watch before the cutoff) is never trained: its row is set
    to zero, the ID vector of a learner unknown to the model, not left at its random init."""
    _, full, _, _ = platform
    dm, model, result = trained
    untrained = ~rows_with_training_data(dm)
    no_events = np.bincount(full.events["learner_idx"], minlength=full.n_learners) == 0
    assert no_events.sum() >= 3 and untrained[no_events].all()  # what this is about
    rows = model.learner_tower.ids.weight.detach().cpu()
    norms = rows.norm(dim=1).numpy()
    assert (norms[untrained] == 0).all()  # exactly zero
    assert (norms[~untrained] > 0).all()  # the trained rows are left as trained
    assert result.extra["untrained_learner_id_rows"] == int(untrained.sum())
    np.testing.assert_array_equal(dm.trained_learners(), ~untrained)


def test_validation_metrics_are_those_of_the_zeroed_weights(trained):
    """The rows are zeroed before validation is recomputed on the reloaded weights, so the
    reported validation metrics are the saved model's (some validation learners never trained)."""
    dm, model, result = trained
    valid = dm.valid
    assert not rows_with_training_data(dm)[valid.label_learners()].all()
    rec = NCFRecommender(model, valid, dm.event_log.learner_ids, dm.event_log.course_ids,
                         device="cpu")  # fmt: skip
    learners = rec.learner_embeddings_at(np.arange(len(rec.learner_ids)))
    courses = rec.course_embeddings()
    again = evaluate_full_ranking(
        lambda idx: model.score(learners[torch.from_numpy(idx)], courses),
        valid.labels, exclude=valid.seen, device="cpu",
    )  # fmt: skip
    assert again.summary()["ndcg@10"] == pytest.approx(result.valid["val_ndcg@10"], abs=1e-6)


def test_an_untrained_learner_served_later_is_its_history_with_a_zero_id_vector(platform, trained):
    """Served at a later cutoff, where it has a history, a learner that never trained gets
    exactly the embedding a learner unknown to the model with the same history gets."""
    _, full, _, end = platform
    dm, model, _ = trained
    untrained = ~rows_with_training_data(dm)
    rec = NCFRecommender(model, dm.test, full.learner_ids, full.course_ids, inputs=dm.inputs,
                         device="cpu")  # fmt: skip
    later = rec.at(full, end)
    idx = later.learner_ids.to_index(full.learner_ids.index[untrained]).astype(np.int64)
    idx = idx[np.diff(later.snapshot.history.indptr)[idx] > 0]  # with a history by then
    assert len(idx) >= 3
    with torch.no_grad():
        bags = csr_bags(later._history, idx)
        expect = model.learners(bags, torch.full((len(idx),), -1))  # no ID row
    torch.testing.assert_close(later.learner_embeddings_at(idx), expect)


def test_a_refit_zeroes_the_rows_its_own_snapshots_did_not_train(platform, tmp_path):
    """The refit trains a fresh copy on snapshots moved to the test cutoff: the rows zeroed
    are those without a training row there."""
    dm, model, result = train_id_model(platform, tmp_path, refit=True)
    untrained = ~rows_with_training_data(dm.for_refit())
    assert untrained.sum() != (~rows_with_training_data(dm)).sum()  # other learners trained
    norms = model.learner_tower.ids.weight.detach().cpu().norm(dim=1).numpy()
    assert (norms[untrained] == 0).all() and (norms[~untrained] > 0).all()
    assert result.extra["untrained_learner_id_rows"] == int(untrained.sum())
