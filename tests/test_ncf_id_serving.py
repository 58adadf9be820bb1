"""Serving a two-tower with learner ID embeddings (`ncf.model.learner_ids=true`) to learners
that have no ID row: learners new since training (`NCFRecommender.at` on a later log),
learners of the learner table without any event, and ids unknown to the learner table.

The blend's served lists ask the recommender about every learner of the learner table with
cold_start="empty_history" (`experiments.blend.Models.serving`): such learners must get the
cold-start vector (empty history bag, zero ID vector) and, through `history_sizes` == 0, the
popular lists of the fallback chain; never an exception. A tiny platform and a
random-initialised model: serving does not depend on how good the weights are."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from blend import CandidateBuilder
from blend.lists import served_lists
from blend.workflow import learner_routes
from ncf.inputs import InputBuilder
from ncf.model import TwoTower
from ncf.recommender import NCFRecommender
from watchlog.cleaning import CleaningConfig, clean
from watchlog.eventlog import EventLog
from watchlog.idmap import UnknownIdError
from watchlog.splits import Fold
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


def test_at_a_later_cutoff_serves_learners_new_since_training(platform, rec):
    _, full, _, end = platform
    with pytest.warns(UserWarning, match="learners have no learner-ID row"):
        later = rec.at(full, end)
    assert later.learner_ids is rec.learner_ids  # the model's learners: ID rows
    everyone = full.learner_ids.index
    new = everyone[~later.known_learners(everyone)]
    assert later.serving_report["unknown_learners"] == len(new) > 0
    table = later.recommend_table(everyone, N=4)
    assert set(table["learner_id"]) == set(everyone)
    assert (later.history_sizes(new) == 0).all()
    assert np.isfinite(later.score_stats(everyone)[["ncf_mean", "ncf_logsumexp"]].to_numpy()).all()


def test_served_lists_of_the_whole_learner_table_route_new_learners_to_popular(platform, rec):
    """What `experiments.blend.write_served_lists` does, chunk by chunk, at the end of the log:
    every learner of the table (and one id the table lacks) gets a list, no exception; the
    learners without an ID row (or without history) get the popular fallback lists."""
    _, full, _, end = platform
    with pytest.warns(UserWarning, match="learners have no learner-ID row"):
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
    new = full.learner_ids.index[~now.known_learners(full.learner_ids.index)]
    assert not table.loc[table["learner_id"].isin(new), "has_history"].any()
    assert first[new].str.startswith("popular_").all()
    assert first[UNKNOWN] == "popular_global"
    with_history = table.loc[table["has_history"], "learner_id"].unique()
    assert len(with_history) and (first[with_history] == "blend").all()
