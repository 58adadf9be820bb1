"""Co-watch similarity against a dense numpy reference, and its rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from watchlog.cowatch import MEASURES, CoWatchSimilarity, binarize_watches, cowatch_similarity


def dense_reference(x, measure: str, top_k: int | None, min_count: int = 1) -> np.ndarray:
    """The definition, spelled out densely: one row at a time, lexsort for the top-k."""
    b = (np.asarray(sp.csr_matrix(x).toarray()) > 0).astype(np.int64)
    c = b.T @ b
    n = np.diag(c).astype(np.float64)
    n_active = int((b.sum(axis=1) > 0).sum())
    ni, nj = n[:, None], n[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        if measure == "cosine":
            v = c / np.sqrt(ni * nj)
        elif measure == "jaccard":
            v = c / (ni + nj - c)
        else:
            v = np.log(c * n_active / (ni * nj))
    v = v.astype(np.float32)
    ok = (c >= min_count) & (c > 0) & (v > 0)
    np.fill_diagonal(ok, False)
    out = np.zeros_like(v)
    for i in range(len(v)):
        cols = np.flatnonzero(ok[i])
        order = np.lexsort((cols, -v[i, cols]))  # value descending, then lower course index
        if top_k is not None:
            order = order[:top_k]
        out[i, cols[order]] = v[i, cols[order]]
    return out


def random_watches(n_learners=150, n_courses=25, density=0.12, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = sp.random(
        n_learners, n_courses, density=density, random_state=rng, format="csr", dtype=np.float32
    )
    x.data = np.ceil(x.data * 3)  # watch counts 1..3: binarized anyway
    return x


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("top_k", [None, 1, 4])
@pytest.mark.parametrize("min_count", [1, 3])
def test_matches_dense_reference(measure, top_k, min_count):
    for seed in range(3):
        x = random_watches(seed=seed)
        got = cowatch_similarity(x, measure, top_k=top_k, min_count=min_count, block_size=7)
        assert got.shape == (25, 25) and got.dtype == np.float32 and got.format == "csr"
        np.testing.assert_array_equal(got.toarray(), dense_reference(x, measure, top_k, min_count))


def test_known_values_by_hand():
    # learners x courses: course 0 watched by l0,l1,l2; course 1 by l0,l1; course 2 by l2
    x = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=np.float32)
    cos = cowatch_similarity(x, "cosine", top_k=None).toarray()
    assert cos[0, 1] == pytest.approx(2 / np.sqrt(3 * 2))
    assert cos[0, 2] == pytest.approx(1 / np.sqrt(3 * 1))
    assert cos[1, 2] == 0  # never co-watched: not stored
    jac = cowatch_similarity(x, "jaccard", top_k=None).toarray()
    assert jac[0, 1] == pytest.approx(2 / (3 + 2 - 2))
    assert jac[2, 0] == pytest.approx(1 / (1 + 3 - 1))
    # N = 3 active learners (the empty fourth row does not count)
    pmi = cowatch_similarity(x, "pmi", top_k=None).toarray()
    assert pmi[0, 1] == 0  # log(2*3 / (3*2)) = 0: not positive, dropped
    assert pmi[0, 2] == 0  # log(1*3 / (3*1)) = 0 as well
    assert pmi[1, 0] == 0 and pmi.any() == np.False_
    x2 = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 1]], dtype=np.float32)
    pmi2 = cowatch_similarity(x2, "pmi", top_k=None).toarray()
    assert pmi2[0, 1] == pytest.approx(np.log(1 * 3 / (1 * 1)))


def test_no_self_similarity_and_top_k_rows():
    x = random_watches(n_learners=400, n_courses=30, density=0.3, seed=5)
    for measure in MEASURES:
        s = cowatch_similarity(x, measure, top_k=5)
        assert s.diagonal().max() == 0
        assert np.diff(s.indptr).max() <= 5
        assert s.has_canonical_format
        s2 = s.copy()
        s2.sort_indices()
        np.testing.assert_array_equal(s2.indices, s.indices)  # canonical column order
        assert (s.data > 0).all()


def test_ties_go_to_the_lower_course_index():
    # course 0 co-watched exactly once with each of 1..5, all with the same counts -> ties
    x = np.zeros((5, 6), dtype=np.float32)
    x[np.arange(5), 0] = 1
    x[np.arange(5), np.arange(1, 6)] = 1
    s = cowatch_similarity(x, "cosine", top_k=2)
    assert s[0].indices.tolist() == [1, 2]
    assert s[1].indices.tolist() == [0]


@pytest.mark.parametrize("measure", MEASURES)
def test_block_size_invariance(measure):
    x = random_watches(n_learners=300, n_courses=41, density=0.15, seed=3)
    ref = cowatch_similarity(x, measure, top_k=6, block_size=41)
    for block in (1, 2, 5, 16, 40, 1000):
        got = cowatch_similarity(x, measure, top_k=6, block_size=block)
        assert (got != ref).nnz == 0
        np.testing.assert_array_equal(got.indptr, ref.indptr)
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_array_equal(got.data, ref.data)


def test_empty_rows_and_columns():
    x = random_watches(n_learners=100, n_courses=20, density=0.2, seed=9).tolil()
    x[:, [3, 11]] = 0  # two courses nobody watched
    x[10:30, :] = 0  # twenty learners without a watch
    x = x.tocsr()
    x.eliminate_zeros()
    for measure in MEASURES:
        s = cowatch_similarity(x, measure, top_k=3)
        assert s[3].nnz == 0 and s[11].nnz == 0
        assert s[:, [3, 11]].nnz == 0
        np.testing.assert_array_equal(s.toarray(), dense_reference(x, measure, 3))
    # nothing at all, and zero learners
    assert cowatch_similarity(sp.csr_matrix((5, 4)), "pmi").nnz == 0
    assert cowatch_similarity(sp.csr_matrix((0, 4)), "cosine").shape == (4, 4)
    assert cowatch_similarity(sp.csr_matrix((3, 0)), "cosine").shape == (0, 0)


def test_binarized_and_stored_zeros_ignored():
    x = sp.csr_matrix(
        (np.array([5.0, 0.0, 2.0, 1.0]), (np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))),
        shape=(2, 2),
    )
    b = binarize_watches(x)
    assert b.dtype == np.int32
    np.testing.assert_array_equal(b.toarray(), [[1, 0], [1, 1]])
    counts = x.copy()
    counts.data *= 7  # watch seconds instead of counts: same similarity
    np.testing.assert_array_equal(
        cowatch_similarity(x, top_k=None).toarray(),
        cowatch_similarity(counts, top_k=None).toarray(),
    )
    assert x.data[1] == 0.0  # the caller's matrix is not modified


def test_accepts_dense_coo_and_sparse_array():
    x = random_watches(seed=2)
    ref = cowatch_similarity(x, "jaccard", top_k=3)
    for variant in (x.toarray(), x.tocoo(), sp.csr_array(x), x.tocsc()):
        assert (cowatch_similarity(variant, "jaccard", top_k=3) != ref).nnz == 0


def test_bad_input():
    x = random_watches(seed=1)
    with pytest.raises(ValueError, match="measure: must be one of"):
        cowatch_similarity(x, "dice")
    with pytest.raises(ValueError, match="top_k: must be >= 1, got 0"):
        cowatch_similarity(x, top_k=0)
    with pytest.raises(TypeError, match="top_k"):
        cowatch_similarity(x, top_k=2.5)
    with pytest.raises(ValueError, match="min_count"):
        cowatch_similarity(x, min_count=0)
    with pytest.raises(ValueError, match="block_size"):
        cowatch_similarity(x, block_size=0)
    with pytest.raises(
        ValueError, match=r"2-D learner x course matrix, got an array of shape \(5,\)"
    ):
        cowatch_similarity(np.ones(5))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\)"):
        cowatch_similarity(np.ones((2, 3, 4)))
    neg = x.copy()
    neg.data[:3] = [-1.0, np.nan, np.inf]
    with pytest.raises(ValueError, match=r"\(150, 25\).*finite and >= 0 -- 3 of .*learner"):
        cowatch_similarity(neg)
    with pytest.raises(TypeError, match="expected real numbers"):
        cowatch_similarity(np.array([["a", "b"]], dtype=object))


def test_estimator_and_json_round_trip():
    x = random_watches(n_learners=200, n_courses=30, seed=4)
    est = CoWatchSimilarity(measure="pmi", top_k=4, min_count=2, block_size=8)
    assert est.fit(x) is est
    np.testing.assert_array_equal(est.similarity_.toarray(), dense_reference(x, "pmi", 4, 2))
    b = (x.toarray() > 0).sum(axis=0)
    np.testing.assert_array_equal(est.course_watchers_, b)
    assert est.n_active_learners_ == int((x.getnnz(axis=1) > 0).sum())
    assert est.n_courses_ == 30 and est.n_learners_ == 200
    assert est.n_candidate_pairs_ >= est.similarity_.nnz
    state = json.loads(json.dumps(est.to_dict()))
    again = CoWatchSimilarity.from_dict(state)
    assert again.get_params() == est.get_params()
    np.testing.assert_array_equal(again.similarity_.data, est.similarity_.data)
    np.testing.assert_array_equal(again.similarity_.indices, est.similarity_.indices)
    assert again.similarity_.dtype == np.float32
    with pytest.raises(RuntimeError, match="not fitted"):
        CoWatchSimilarity().to_dict()
    with pytest.raises(ValueError, match="expected type"):
        CoWatchSimilarity.from_dict({"type": "other"})


def test_on_the_synthetic_platform(small_platform):
    log = small_platform.log
    watched = log.events[log.events["watch_seconds"].fillna(0) > 0]
    x = log.interactions(watched)
    s = CoWatchSimilarity("cosine", top_k=10).fit(x).similarity_
    assert s.shape == (log.n_courses, log.n_courses)
    # co-watch clusters by language (world.py): most top neighbours share the course's language
    lang = log.courses["language"].to_numpy()
    rows = np.repeat(np.arange(s.shape[0]), np.diff(s.indptr))
    assert (lang[rows] == lang[s.indices]).mean() > 0.6
