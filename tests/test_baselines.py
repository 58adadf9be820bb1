"""baselines: EASE by hand and by per-column ridge, ItemKNN by brute force."""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pytest
import scipy.sparse as sp

from baselines import (
    EASE,
    Candidate,
    ItemKNN,
    Popularity,
    Window,
    baseline_rows,
    default_candidates,
    dense_ease_peak_gib,
)
from evaluation import full_ranking_topk


def random_watches(n_learners=60, n_courses=15, density=0.25, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = sp.random(
        n_learners, n_courses, density=density, random_state=rng, format="csr", dtype=np.float32
    )
    x.data = np.ceil(x.data * 500)  # watch seconds: binarized by every baseline
    return x


def test_ease_hand_computed():
    # X = [[1, 1], [1, 0]], l2 = 1: G + I = [[3, 1], [1, 2]], P = [[2, -1], [-1, 3]] / 5,
    # B_01 = -P_01 / P_11 = 1/3, B_10 = -P_10 / P_00 = 1/2 (= the per-column ridge
    # solutions x0.x1 / (x0.x0 + 1) and x0.x1 / (x1.x1 + 1)).
    x = sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 0.0]], dtype=np.float32))
    m = EASE(l2=1.0).fit(x)
    np.testing.assert_allclose(m.B_, [[0.0, 1 / 3], [1 / 2, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(m.score([0, 1]), [[1 / 2, 1 / 3], [0.0, 1 / 3]], rtol=1e-6)


def test_ease_equals_per_column_ridge_with_zero_diagonal():
    x = random_watches()
    xb = (x.toarray() > 0).astype(np.float64)
    l2 = 3.0
    m = EASE(l2=l2).fit(x)
    for j in range(xb.shape[1]):
        others = np.delete(np.arange(xb.shape[1]), j)
        a = xb[:, others]
        coef = np.linalg.solve(a.T @ a + l2 * np.eye(len(others)), a.T @ xb[:, j])
        np.testing.assert_allclose(m.B_[others, j], coef, rtol=1e-4, atol=1e-6)
        assert m.B_[j, j] == 0.0
    assert m.B_.dtype == np.float32


def brute_item_knn(x, k, shrink):
    """The definition, densely: cosine (float32, as co-watch stores it), shrink, top-k per row
    by value then lower column, score = binary history @ S^T."""
    b = (x.toarray() > 0).astype(np.float64)
    c = b.T @ b
    n = np.diag(c)
    d = np.sqrt(n[:, None] * n[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = (c / d).astype(np.float32)
        v = (cos.astype(np.float64) * (d / (d + shrink))).astype(np.float32)
    ok = (c > 0) & ~np.eye(len(c), dtype=bool)
    s = np.zeros_like(v)
    for i in range(len(v)):
        cols = np.flatnonzero(ok[i])
        top = cols[np.lexsort((cols, -v[i, cols]))][:k]
        s[i, top] = v[i, top]
    return b @ s.T.astype(np.float64), s


@pytest.mark.parametrize("k,shrink", [(3, 0.0), (3, 10.0), (100, 0.0), (5, 2.5)])
def test_item_knn_matches_brute_force(k, shrink):
    for seed in range(3):
        x = random_watches(seed=seed)
        m = ItemKNN(k=k, shrink=shrink, block_size=4).fit(x)
        want_scores, want_s = brute_item_knn(x, k, shrink)
        np.testing.assert_array_equal(m.similarity_.toarray(), want_s)
        got = m.score(np.arange(x.shape[0]))
        assert got.shape == x.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want_scores, rtol=1e-5, atol=1e-6)


def test_popularity_counts_distinct_learners():
    x = random_watches()
    m = Popularity().fit(x)
    want = (x.toarray() > 0).sum(axis=0)
    s = m.score([4, 0, 4])
    assert s.shape == (3, 15) and s.dtype == np.float32
    np.testing.assert_array_equal(s, np.tile(want, (3, 1)))


@pytest.mark.parametrize("model", [Popularity(), ItemKNN(k=5), EASE(l2=10.0)])
def test_score_fn_for_full_ranking_and_x_input(model):
    x_train = random_watches(seed=1)
    model.fit(x_train)
    users = np.arange(60)
    topk = full_ranking_topk(model.score, 5, users=users, exclude=x_train, chunk_size=16)
    assert topk.shape == (60, 5)
    watched = x_train.toarray() > 0
    assert not watched[np.repeat(users, 5), topk.ravel()][topk.ravel() >= 0].any()
    # temporal use: history rows from another matrix, scored with the fitted model
    x_hist = random_watches(n_learners=7, seed=9)
    got = model.score(np.array([6, 2]), X_input=x_hist)
    ref = type(model)(**model.get_params()).fit(x_train)
    ref_rows = ref.score(np.array([6, 2]), X_input=x_hist)
    np.testing.assert_array_equal(got, ref_rows)
    if not isinstance(model, Popularity):  # history-based: the input rows matter
        xb = (x_hist[[6, 2]].toarray() > 0).astype(np.float32)
        w = model.B_ if isinstance(model, EASE) else model.similarity_.T.toarray()
        np.testing.assert_allclose(got, xb @ w, rtol=1e-5, atol=1e-6)
    topk = full_ranking_topk(partial(model.score, X_input=x_hist), 3, users=[0, 6], exclude=x_hist)
    assert topk.shape == (2, 3)


def test_bad_input():
    x = random_watches()
    with pytest.raises(TypeError, match="X: must be a scipy sparse"):
        EASE().fit(x.toarray())
    with pytest.raises(ValueError, match="l2: must be finite and > 0"):
        EASE(l2=0.0).fit(x)
    with pytest.raises(ValueError, match="l2: must be finite and > 0"):
        EASE(l2=0.0, rank=3).fit(x)
    with pytest.raises(ValueError, match="rank: must be None \\(dense\\) or a positive int"):
        EASE(rank=0).fit(x)
    with pytest.raises(ValueError, match="max_dense_gib: must be > 0 or None"):
        EASE(max_dense_gib=0).fit(x)
    with pytest.raises(RuntimeError, match="EASE is not fitted"):
        _ = EASE().form
    with pytest.raises(ValueError, match="shrink: only defined for measure='cosine'"):
        ItemKNN(measure="jaccard", shrink=1.0).fit(x)
    with pytest.raises(RuntimeError, match="ItemKNN is not fitted"):
        ItemKNN().score([0])
    m = Popularity().fit(x)
    with pytest.raises(
        ValueError,
        match=r"learner_idx: rows must be in \[0, 60\) of X \(fitted\); 2 are not \(e.g. 60, -1\)",
    ):
        m.score([0, 60, -1])
    with pytest.raises(ValueError, match=r"X_input: expected 15 columns \(n_courses at fit\)"):
        m.score([0], X_input=random_watches(n_courses=14))
    neg = x.copy()
    neg.data[0] = -1.0
    with pytest.raises(ValueError, match="values must be finite and >= 0"):
        ItemKNN().fit(neg)


def test_ease_low_rank_at_full_rank_is_dense_ease_off_own_courses():
    x = random_watches(n_learners=80, seed=2)
    dense = EASE(l2=5.0).fit(x)
    low = EASE(l2=5.0, rank=15).fit(x)  # rank = n_courses: the Gram matrix exactly
    assert dense.rank_ is None and dense.form == "dense" and low.form == "low-rank 15"
    assert low.B_ is None and low.factors_.left.shape == (15, 15)
    got, want = low.score(np.arange(80)), dense.score(np.arange(80))
    own = x.toarray() > 0  # the low-rank form does not zero B's diagonal: own courses differ
    np.testing.assert_allclose(got[~own], want[~own], rtol=1e-3, atol=1e-4)


def test_ease_switches_to_low_rank_beyond_the_memory_budget(caplog):
    x = random_watches()
    # 15 courses: 3.2 x 15^2 x 8 bytes = 5,760 bytes, over a budget of 1e-6 GiB (1,074 bytes)
    with caplog.at_level(logging.WARNING, logger="baselines.ease_model"):
        m = EASE(l2=10.0, max_dense_gib=1e-6, fallback_rank=4).fit(x)
    assert m.rank_ == 4 and m.B_ is None
    assert "max_dense_gib=1e-06" in caplog.text and "Set rank=<int>" in caplog.text
    ref = EASE(l2=10.0, rank=4).fit(x)
    np.testing.assert_array_equal(m.score(np.arange(60)), ref.score(np.arange(60)))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="baselines.ease_model"):
        assert EASE(l2=10.0, max_dense_gib=1e-5).fit(x).rank_ is None  # 5,760 < 10,737 bytes
        assert EASE(l2=10.0, max_dense_gib=None).fit(x).rank_ is None
    assert caplog.text == ""
    assert dense_ease_peak_gib(17_632) == pytest.approx(7.9e9 / 2**30, rel=0.01)  # measured


def test_baseline_rows_choose_on_validation_and_test_once():
    x_valid_in, x_valid_truth = random_watches(seed=3), random_watches(seed=4, density=0.1)
    x_test_in, x_test_truth = random_watches(seed=5), random_watches(seed=6, density=0.1)
    valid = Window(x_valid_in, x_valid_truth, exclude=x_valid_in)
    test = Window(x_test_in, x_test_truth, exclude=x_test_in)
    knn = Candidate("knn", ItemKNN(), "k", (1, 3, 10))
    per_user = {}
    rows = baseline_rows(
        valid, test, ["ndcg@10", "recall@10"], per_user, [knn, Candidate("pop", Popularity())]
    )
    by_k = {k: valid.evaluate(ItemKNN(k=k))["ndcg@10"] for k in (1, 3, 10)}
    assert len(set(by_k.values())) > 1  # the grid matters on these windows
    best = max(by_k, key=by_k.get)
    assert rows[0]["model"] == "knn" and rows[0]["parameter"] == "k" and rows[0]["chosen"] == best
    assert rows[0]["valid_ndcg@10"] == by_k[best]
    want = test.evaluate(ItemKNN(k=best))
    assert rows[0]["ndcg@10"] == want["ndcg@10"] and rows[0]["recall@10"] == want["recall@10"]
    assert (
        rows[1]["chosen"] is None and rows[1]["ndcg@10"] == test.evaluate(Popularity())["ndcg@10"]
    )
    assert set(per_user) == {"knn", "pop"}
    with pytest.raises(ValueError, match="knn: ItemKNN has no parameter 'l2'"):
        Candidate("knn", ItemKNN(), "l2", (1.0,))
    with pytest.raises(ValueError, match="values of 'k' to try: none given"):
        Candidate("knn", ItemKNN(), "k", ())


def test_baseline_rows_name_a_low_rank_ease():
    x = random_watches(seed=7)
    w = Window(x, random_watches(seed=8, density=0.1), exclude=x)
    rows = baseline_rows(w, w, ["ndcg@10"], candidates=default_candidates(ease=EASE(rank=3)))
    assert [r["model"] for r in rows] == [
        "EASE (low-rank 3)",
        "item-kNN (co-watch cosine)",
        "popularity",
    ]


# ---- the NeuMF speed peer -------------------------------------------------------------------
def test_negative_sampling_avoids_positives_and_is_seeded():
    from benchmarks.neumf_peer import sample_training_pairs

    x = random_watches(density=0.6)  # dense rows: many draws must be redrawn
    xb = (x > 0).astype(np.int32).tocsr()
    u, i, y = sample_training_pairs(xb, 4, np.random.default_rng(0))
    assert u.size == i.size == y.size == xb.nnz * 5 and y.sum() == xb.nnz
    watched = xb.toarray() > 0
    assert watched[u[y == 1], i[y == 1]].all() and not watched[u[y == 0], i[y == 0]].any()
    assert (np.bincount(u[y == 0], minlength=60) == 4 * np.diff(xb.indptr)).all()
    u2, i2, _ = sample_training_pairs(xb, 4, np.random.default_rng(0))
    np.testing.assert_array_equal(i, i2)


def test_neumf_learns_two_groups_and_scores_for_full_ranking():
    from benchmarks.neumf_peer import NeuMF, train_neumf

    # learners 0-39 watch courses 0-9, learners 40-79 courses 10-19 (each about half of them)
    rng = np.random.default_rng(0)
    group = np.arange(80) // 40
    dense = (rng.random((80, 20)) < 0.5) & (np.arange(20)[None, :] // 10 == group[:, None])
    x = sp.csr_matrix(dense.astype(np.float32))
    out = train_neumf(
        x, epochs=6, batch_size=128, factors=8, mlp_layers=(16, 8), lr=0.03, seed=1, threads=1
    )
    assert set(out) >= {"samples_per_s", "seconds_per_epoch", "losses", "model"}
    assert out["samples_per_epoch"] == x.nnz * 5 and out["samples_per_s"] > 0
    assert out["losses"][-1] < out["losses"][0]
    s = out["model"].score(np.arange(80)).cpu().numpy()  # (80, 20) logits
    assert s.shape == (80, 20)
    own = np.where(
        group[:, None] == 0, s[:, :10].mean(1, keepdims=True), s[:, 10:].mean(1, keepdims=True)
    )
    other = np.where(
        group[:, None] == 0, s[:, 10:].mean(1, keepdims=True), s[:, :10].mean(1, keepdims=True)
    )
    assert (own > other).mean() > 0.95
    topk = full_ranking_topk(out["model"].score, 3, users=np.arange(80), exclude=x)
    # a learner's unwatched own-group courses were also sampled as negatives for them, so
    # only "mostly own group" holds: chance would be 1/3 (about 5 of the 15 unwatched)
    assert (topk // 10 == group[:, None]).mean() > 0.75
    again = train_neumf(
        x, epochs=2, batch_size=128, factors=8, mlp_layers=(16, 8), lr=0.03, seed=1, threads=1
    )
    np.testing.assert_allclose(again["losses"], out["losses"][:2], rtol=1e-6)
    with pytest.raises(ValueError, match="mlp_layers: need >= 2 widths, the first even"):
        NeuMF(3, 4, mlp_layers=(15, 8))
