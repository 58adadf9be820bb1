"""ncf.retrieval on faiss against its torch path (both exact CPU paths, with and without an
exclusion: masked products with a threshold select, evaluation.threshold_select.dot_top_k, and faiss's search with
the over-fetch),
approximate search (ncf.ann), the fallback without faiss, and the retrieval option of
NCFRecommender."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp

import evaluation.threshold_select as threshold_select
import ncf.retrieval as retrieval
from ncf.ann import ItemIndex, load_faiss
from ncf.retrieval import heavy_limit, top_k_by_dot

faiss = pytest.importorskip("faiss")


def torch_path(monkeypatch, *args, **kwargs):
    """top_k_by_dot with faiss hidden: the torch (fallback) path."""
    with monkeypatch.context() as m:
        m.setattr(retrieval, "load_faiss", lambda: None)
        return top_k_by_dot(*args, **kwargs)


@pytest.fixture(scope="module")
def emb():
    rng = np.random.default_rng(0)
    # continuous scores: ties have probability 0, so both paths must agree on the order too
    q = rng.normal(size=(200, 16)).astype(np.float32)
    items = rng.normal(size=(300, 16)).astype(np.float32)
    return q, items


@pytest.fixture(params=["masked", "over-fetch"])
def exact_path(request, monkeypatch):
    """Each exclusion test runs on both exact CPU paths: masked products + threshold select
    (the default up to MAX_ITEMS courses) and faiss's search with the over-fetch (above it)."""
    if request.param == "over-fetch":
        monkeypatch.setattr(retrieval, "MAX_ITEMS", 0)
    return request.param


def exclusion(n: int, m: int, seed: int) -> sp.csr_array:
    """~10 excluded per row, and rows 3 and 77 excluding more than the over-fetch limit."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n, m)) < 10 / m
    assert heavy_limit(5) < 150
    dense[[3, 77], :150] = True  # heavy rows: ranked by torch inside the faiss path
    return sp.csr_array(dense.astype(np.float32))


def assert_same(got, want):
    assert got[0].dtype == np.int64 and got[1].dtype == np.float32
    assert got[0].shape == want[0].shape
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_faiss_path_equals_torch_path_with_and_without_exclusion(
    emb, monkeypatch, chunk_size, exact_path
):
    q, items = emb
    ex = exclusion(200, 300, seed=1)
    for kwargs in ({}, {"exclude": ex}):
        got = top_k_by_dot(q, items, 5, chunk_size=chunk_size, device="cpu", **kwargs)
        want = torch_path(monkeypatch, q, items, 5, chunk_size=chunk_size, device="cpu", **kwargs)
        assert_same(got, want)
    got = top_k_by_dot(q, items, 5, exclude=ex, chunk_size=chunk_size, device="cpu")
    rows, idx = np.repeat(np.arange(200), 5), got[0].ravel()
    assert (idx >= 0).all() and ex[rows, idx].sum() == 0  # nothing excluded comes back


def test_exclusion_by_sorted_keys_equals_the_bitset(emb, monkeypatch):
    """Large catalogues test exclusion by binary search instead of a bitset: same lists."""
    q, items = emb
    ex = exclusion(200, 300, seed=6)
    monkeypatch.setattr(retrieval, "MAX_ITEMS", 0)  # the over-fetch path drops excluded ids
    want = top_k_by_dot(q, items, 5, exclude=ex, chunk_size=16)
    monkeypatch.setattr(retrieval, "_BITSET_LIMIT", 0)
    assert_same(top_k_by_dot(q, items, 5, exclude=ex, chunk_size=16), want)
    assert_same(torch_path(monkeypatch, q, items, 5, exclude=ex), want)


def test_faiss_path_is_the_one_taken(emb, monkeypatch):
    """The equality above must compare two different paths: above MAX_ITEMS courses faiss
    is really searched, and the torch path does not search it."""
    q, items = emb
    calls = []
    real = ItemIndex.search

    def spy(self, *a, **k):
        calls.append(self.method)
        return real(self, *a, **k)

    monkeypatch.setattr(ItemIndex, "search", spy)
    monkeypatch.setattr(retrieval, "MAX_ITEMS", 299)  # a catalogue above the limit
    top_k_by_dot(q, items, 5, device="cpu")
    assert calls and set(calls) == {"exact"}
    calls.clear()
    torch_path(monkeypatch, q, items, 5, device="cpu")
    assert not calls


def test_masked_path_up_to_max_items_with_or_without_exclusion_and_faiss_search_above(
    emb, monkeypatch
):
    """The equalities above compare different paths: which one ran is observed, not assumed.
    These are the CPU paths (on CUDA, torch.topk on the device serves every catalogue)."""
    q, items = emb
    ex = exclusion(200, 300, seed=1)
    masked, searched = [], []
    real_masked, real_search = retrieval.dot_top_k, ItemIndex.search
    monkeypatch.setattr(retrieval, "dot_top_k",
                        lambda *a, **k: masked.append(1) or real_masked(*a, **k))  # fmt: skip
    monkeypatch.setattr(ItemIndex, "search",
                        lambda self, *a, **k: searched.append(1) or real_search(self, *a, **k))  # fmt: skip
    for kwargs in ({"exclude": ex}, {}):
        top_k_by_dot(q, items, 5, device="cpu", **kwargs)
        assert masked and not searched, kwargs
        masked.clear()
    monkeypatch.setattr(retrieval, "MAX_ITEMS", 299)  # a catalogue above the limit
    for kwargs in ({"exclude": ex}, {}):
        top_k_by_dot(q, items, 5, device="cpu", **kwargs)
        assert searched and not masked, kwargs
        searched.clear()
    top_k_by_dot(q, items, 5, method="ivf", device="cpu")  # approximate: never the masked path
    assert searched and not masked


def test_masked_path_is_exact_when_the_sampled_threshold_is_too_high(emb, monkeypatch):
    """A row with fewer than N scores above its threshold is redone from an empty heap: a seed
    above every score (all rows redone) or a huge sample rank give the same lists."""
    q, items = emb
    ex = exclusion(200, 300, seed=7)
    want = torch_path(monkeypatch, q, items, 7, exclude=ex)
    assert_same(top_k_by_dot(q, items, 7, exclude=ex), want)
    monkeypatch.setattr(threshold_select, "kth_largest",
                        lambda part, k: np.full(part.shape[0], 1e30, np.float32))  # fmt: skip
    assert_same(top_k_by_dot(q, items, 7, exclude=ex), want)
    monkeypatch.undo()
    monkeypatch.setattr(threshold_select, "SAMPLE_RANK", 1)  # the sample's best: often too high
    # 16-row blocks: many blocks, the last one short (200 = 12 x 16 + 8)
    monkeypatch.setattr(threshold_select, "_BLOCK_FLOATS", 300 * 16)
    monkeypatch.setattr(threshold_select, "_MIN_ROWS", 1)
    assert_same(top_k_by_dot(q, items, 7, exclude=ex), want)


def test_masked_path_leaves_every_thread_pool_as_it_was_and_matches_a_full_sort():
    """A search leaves every library's thread count as it found it (faiss's OpenMP threads are
    set for its duration; the seeded-UMAP side effect of resetting BLAS threads is guarded by
    the slow test_ncf_plots test); the lists are the exact top-N of a full sort."""
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(11)
    q = rng.normal(size=(500, 8)).astype(np.float32)
    items = rng.normal(size=(2_000, 8)).astype(np.float32)
    ex = sp.csr_array((rng.random((500, 2_000)) < 0.01).astype(np.float32))
    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    idx, scores = top_k_by_dot(q, items, 50, exclude=ex)
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before
    full = q @ items.T
    full[ex.toarray() > 0] = -np.inf
    want = np.argsort(-full, axis=1, kind="stable")[:, :50]
    np.testing.assert_array_equal(np.sort(idx, axis=1), np.sort(want, axis=1))
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), rtol=1e-5)


def test_candidates_global_and_per_row_match_torch(emb, monkeypatch, exact_path):
    q, items = emb
    ex = exclusion(200, 300, seed=2)
    cand = np.array([250, 3, 3, 7, 11, 0, 15, 120, 121, 122, 299])
    got = top_k_by_dot(q, items, 4, exclude=ex, candidates=cand, chunk_size=13)
    want = torch_path(monkeypatch, q, items, 4, exclude=ex, candidates=cand, chunk_size=13)
    assert_same(got, want)
    assert set(got[0][got[0] >= 0].ravel()) <= set(cand.tolist())
    per_row = sp.random(200, 300, density=0.05, random_state=3, format="csr")
    got = top_k_by_dot(q, items, 6, exclude=ex, candidates=per_row)
    want = torch_path(monkeypatch, q, items, 6, exclude=ex, candidates=per_row)
    assert_same(got, want)


def test_padding_when_fewer_allowed_than_n(monkeypatch, exact_path):
    rng = np.random.default_rng(4)
    q = rng.normal(size=(3, 4)).astype(np.float32)
    items = rng.normal(size=(6, 4)).astype(np.float32)
    ex = sp.csr_array(np.array([[1, 1, 0, 0, 0, 0], [0] * 6, [1] * 6], dtype=np.float32))
    idx, scores = top_k_by_dot(q, items, 8, exclude=ex)  # N > m: every list is padded
    want = torch_path(monkeypatch, q, items, 8, exclude=ex)
    assert_same((idx, scores), want)
    assert (idx[0, :4] >= 0).all() and (idx[0, 4:] == -1).all()
    assert (idx[1, :6] >= 0).all() and (idx[1, 6:] == -1).all()
    assert (idx[2] == -1).all() and np.isneginf(scores[2]).all()
    assert np.isneginf(scores[idx == -1]).all() and np.isfinite(scores[idx >= 0]).all()


def test_faiss_threads_follow_torch_and_are_restored(emb):
    q, items = emb
    before = faiss.omp_get_max_threads()
    top_k_by_dot(q, items, 5)
    assert faiss.omp_get_max_threads() == before


def test_small_batches_are_searched_with_blas_and_the_setting_is_restored(emb):
    """faiss-cpu's default only uses BLAS from queries x d >= 128,000 (2,000 learners at
    d = 64); below, a per-pair loop 2-6x slower. A search sets the threshold to 4 queries
    for its duration and restores it."""
    q, items = emb
    index = ItemIndex("exact").fit(items)
    seen = []

    class Recorder:  # the faiss index, noting the threshold each search runs under
        def __init__(self, inner):
            self.inner = inner

        def search(self, *args, **kwargs):
            seen.append(faiss.cvar.distance_compute_blas_threshold)
            return self.inner.search(*args, **kwargs)

    before = faiss.cvar.distance_compute_blas_threshold
    index.index_ = Recorder(index.index_)
    scores, idx = index.search(np.ascontiguousarray(q[:10]), 5)
    assert seen == [4 * 16] and faiss.cvar.distance_compute_blas_threshold == before
    want = np.argsort(-(q[:10] @ items.T), axis=1)[:, :5]
    np.testing.assert_array_equal(idx, want)


def recall_at(got: np.ndarray, want: np.ndarray) -> float:
    """Mean share of each row of `want` found in the same row of `got`."""
    hits = [np.intersect1d(a, b).size for a, b in zip(got, want, strict=True)]
    return float(np.mean(hits)) / want.shape[1]


def clustered(n: int, m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, 16)).astype(np.float32) * 3
    items = centers[rng.integers(0, 20, m)] + rng.normal(size=(m, 16)).astype(np.float32)
    q = centers[rng.integers(0, 20, n)] + rng.normal(size=(n, 16)).astype(np.float32)
    return q.astype(np.float32), items.astype(np.float32)


@pytest.mark.parametrize(
    "index", [ItemIndex("hnsw", hnsw_m=16), ItemIndex("ivf", ivf_nlist=20, ivf_nprobe=5)]
)
def test_approximate_search_has_high_recall_and_still_excludes(index, monkeypatch):
    q, items = clustered(300, 3000)
    exact = top_k_by_dot(q, items, 10)
    for method in (index.method, index.clone().fit(items)):  # built per call, or reused
        got = top_k_by_dot(q, items, 10, method=method)
        assert recall_at(got[0], exact[0]) >= 0.9
    ex = sp.csr_array(
        (np.ones(300, np.float32), (np.arange(300), exact[0][:, 0])), shape=(300, 3000)
    )  # each learner's best item, excluded
    got = top_k_by_dot(q, items, 10, exclude=ex, method=index.clone().fit(items))
    assert not (got[0] == exact[0][:, :1]).any()
    cand = np.arange(0, 3000, 3)  # a global candidate set: a selector on the fitted index
    monkeypatch.setattr(retrieval, "EXACT_CANDIDATES", 100)  # 1,000 allowed: above it
    got = top_k_by_dot(q, items, 10, candidates=cand, method=index.clone().fit(items))
    assert np.isin(got[0][got[0] >= 0], cand).all()
    assert recall_at(got[0], top_k_by_dot(q, items, 10, candidates=cand)[0]) >= 0.8


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_a_small_global_candidate_set_is_searched_exactly_whatever_the_method(method):
    # a filtered graph / IVF search over 20 allowed items of 3,000 came back mostly padding
    q, items = clustered(50, 3000, seed=2)
    cand = np.arange(0, 3000, 150)  # (20,) allowed for every learner
    want = top_k_by_dot(q, items, 10, candidates=cand)
    for index in (method, ItemIndex(method).fit(items)):
        assert_same(top_k_by_dot(q, items, 10, candidates=cand, method=index), want)


def test_ivf_is_reproducible_with_its_seed():
    q, items = clustered(50, 2000, seed=1)
    a = top_k_by_dot(q, items, 10, method=ItemIndex("ivf", ivf_nprobe=2, seed=3).fit(items))
    b = top_k_by_dot(q, items, 10, method=ItemIndex("ivf", ivf_nprobe=2, seed=3).fit(items))
    np.testing.assert_array_equal(a[0], b[0])


def test_without_faiss_exact_runs_on_torch_and_approximate_says_what_to_install(emb, monkeypatch):
    q, items = emb
    ex = exclusion(200, 300, seed=5)
    want = top_k_by_dot(q, items, 5, exclude=ex)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    assert load_faiss() is None
    assert_same(top_k_by_dot(q, items, 5, exclude=ex), want)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        top_k_by_dot(q, items, 5, method="hnsw")
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        ItemIndex("ivf").fit(items)


def test_bad_method_and_mismatched_index_are_clear_errors(emb):
    q, items = emb
    with pytest.raises(ValueError, match=r"method: must be one of \('exact', 'hnsw', 'ivf'\)"):
        top_k_by_dot(q, items, 5, method="annoy")
    with pytest.raises(ValueError, match="method: must be one of"):
        ItemIndex("HNSW")
    with pytest.raises(ValueError, match="hnsw_m: must be a positive int"):
        ItemIndex("hnsw", hnsw_m=0)
    index = ItemIndex("hnsw").fit(items[:100])
    with pytest.raises(ValueError, match=r"fitted on items of shape \(100, 16\)"):
        top_k_by_dot(q, items, 5, method=index)
    with pytest.raises(RuntimeError, match="call fit"):
        ItemIndex("ivf").search(q, 5)


def test_an_index_knows_its_items_by_their_sha256_not_their_shape(emb):
    """An index fitted on other vectors of the same shape (a model trained further, reloaded
    or refitted) was searched as if it were this one: stale lists, only the shape checked."""
    import hashlib

    import torch

    from ncf.ann import items_sha256

    q, items = emb
    t = torch.from_numpy(items.copy())
    index = ItemIndex("hnsw").fit(t)
    head = np.asarray(items.shape, dtype=np.int64).tobytes()
    assert index.items_sha256_ == hashlib.sha256(head + items.tobytes()).hexdigest()
    assert items_sha256(t.double()) == index.items_sha256_  # as the index reads them: float32
    assert items_sha256(items.T.copy().T) == index.items_sha256_  # order of the copy: no matter
    top_k_by_dot(q, t, 5, method=index)  # the items it was fitted on
    top_k_by_dot(q, items, 5, method=index)  # the same values in numpy
    changed = t.clone()
    changed[7, 0] += 1.0  # one value of 300 x 16
    for other in (changed, changed.numpy()):
        with pytest.raises(ValueError, match=r"method: the ItemIndex was fitted on other items "
                                             r"of the same shape \(300, 16\): SHA-256 "):  # fmt: skip
            top_k_by_dot(q, other, 5, method=index)
    with torch.no_grad():
        t[3] *= 2  # in place, after it passed: its version counter moved, so it is hashed again
    with pytest.raises(ValueError, match="fitted on other items of the same shape"):
        top_k_by_dot(q, t, 5, method=index)


def test_overflowing_scores_take_the_torch_path_and_its_checks(monkeypatch):
    q = np.full((2, 4), 1e20, np.float32)
    items = np.full((3, 4), 1e20, np.float32)
    items[1] = -1e20
    got = top_k_by_dot(q, items, 2)
    want = torch_path(monkeypatch, q, items, 2)
    np.testing.assert_array_equal(got[1], want[1])  # inf scores, as torch gives them


def small_recommender(retrieval_index=None):
    """A random two-tower over 40 learners x 300 courses (no training needed)."""
    import torch

    from ncf.inputs import Snapshot
    from ncf.model import TwoTower
    from ncf.recommender import NCFRecommender
    from watchlog.idmap import IdMap

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, m = 40, 300
    hist = sp.csr_matrix((rng.random((n, m)) < 0.05).astype(np.float32))
    bags = sp.csr_matrix((rng.random((m, m)) < 0.02).astype(np.float32))
    model = TwoTower(n, m, bag_dim=16, mlp=[16], course_bias=True)
    return NCFRecommender(
        model, Snapshot("t", hist, hist, bags), IdMap(np.arange(n), "learner_id"),
        IdMap(np.arange(m) * 10, "course_id"), device="cpu", retrieval=retrieval_index,
    )  # fmt: skip


def test_recommender_retrieval_option(monkeypatch):
    exact = small_recommender()
    ann = small_recommender(ItemIndex("hnsw", hnsw_m=8))
    assert exact.retrieval_method == "exact" and ann.retrieval_method == "hnsw"
    learners = np.arange(40)
    ids, scores = exact.recommend(learners, N=10)
    # method="exact" overrides the recommender's approximate setting: the very same lists
    ids2, scores2 = ann.recommend(learners, N=10, method="exact")
    np.testing.assert_array_equal(ids, ids2)
    # the approximate lists: high overlap, nothing watched, the index built once
    got, _ = ann.recommend(learners, N=10)
    assert recall_at(got, ids) >= 0.9
    seen = exact.snapshot.seen.tocsr()
    for i in learners:
        assert not set(got[i]) & set(seen[i].indices * 10)
    built = ann._indexes["hnsw"]
    ann.recommend_table(learners, N=5)
    assert ann._indexes["hnsw"] is built
    with monkeypatch.context() as m:
        m.setattr(retrieval, "load_faiss", lambda: None)
        np.testing.assert_array_equal(exact.recommend(learners, N=10)[0], ids)
    with pytest.raises(ValueError, match="method: must be one of"):
        exact.recommend(learners, N=10, method="approx")
    with pytest.raises(TypeError, match="retrieval: must be an ncf.ann.ItemIndex"):
        small_recommender("hnsw")


def test_the_blend_judges_only_exactly_retrieved_candidates():
    from types import SimpleNamespace

    from experiments.blend import labelled_point

    models = SimpleNamespace(ncf=small_recommender(ItemIndex("ivf")), glmix=None)
    with pytest.raises(RuntimeError, match="must be retrieved exactly"):
        labelled_point(None, None, None, models, "binary")


def test_tensors_that_require_grad_are_searched_without_a_graph(emb, monkeypatch):
    """A model's embeddings straight from training (requires_grad) are searched as values on
    every path: the same lists as their detached copies."""
    import torch

    q, items = (torch.from_numpy(a).requires_grad_(True) for a in emb)
    ex = exclusion(200, 300, seed=3)
    want = top_k_by_dot(q.detach(), items.detach(), 5, exclude=ex)
    assert_same(top_k_by_dot(q, items, 5, exclude=ex), want)  # the masked path
    monkeypatch.setattr(retrieval, "MAX_ITEMS", 0)  # faiss's search
    assert_same(top_k_by_dot(q, items, 5, exclude=ex), want)
    assert_same(torch_path(monkeypatch, q, items, 5, exclude=ex), want)


def test_faiss_loading_leaves_no_failed_build_lines_in_an_info_log():
    """faiss logs every CPU build it fails to load at INFO ("Could not load library with
    AVX512 support due to: ModuleNotFoundError"): noise that reads as an error in a run log."""
    import subprocess

    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from ncf.ann import load_faiss; print('loaded', load_faiss() is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "loaded True" in out.stdout
    assert "Could not load library" not in out.stdout + out.stderr
