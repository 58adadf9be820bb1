"""Top-K retrieval on faiss against torch and the matmul floor, exact and approximate.

    python -m benchmarks.bench_retrieval            # 100k x 10k, sizes, recommend() at 1M, ANN
    python -m benchmarks.bench_retrieval --quick    # 20k x 10k, recommend() at 50k, ANN at 10k/30k

All in one process, 1 thread (torch and faiss), d = 64, top-100, float32, seed 0. Times are
CPU seconds (`time.process_time`): with one thread that is the work done, and it stays
comparable when the shared box is busy, which wall time does not (recommend() gives both).

Part "exact" (learners x 10,000 courses; queries N(0, 1/d), items N(0, 1)); each method
without and with the exclusion of already-watched courses (per learner a geometric count,
mean 20, heavy tail, capped at 2,000; uniform courses). All but the torch path and the
selector are timed in 3 interleaved rounds (each once per round), the median reported:
  matmul alone           `q[a:b] @ items.T` per chunk of 4,096 into a fresh buffer (the
                         issue's peer; page faults of the fresh 164 MB are most of it)
  ..., reused buffer     the same products into one buffer: the arithmetic alone
  ..., numpy             fresh buffers, numpy's BLAS (OpenBLAS in its wheels; torch's are MKL):
                         the faster BLAS on some CPUs, so a peer too
  faiss IndexFlatIP      `index.search(q, 100)` over all queries at once (no exclusion)
  top_k_by_dot           the default up to 65,536 courses, with or without an exclusion:
                         masked products + a threshold select (`dot_top_k`)
  ..., faiss search      faiss's search per chunk (the default above 65,536 courses); with the
                         exclusion it over-fetches: asks for N + the chunk's largest excluded
                         count
  top_k_by_dot, torch    the torch path (faiss hidden): matmul + mask + `torch.topk` (once)
  evaluation             `evaluation.full_ranking_topk` with the exclusion: of
                         `Factors(q, items)` (products and select block by block, as the
                         two-tower's validation and test pass it), of a score_fn multiplying
                         each chunk of 2,048 learners (torch, fresh buffers; the threshold
                         select on CPU float32), and of that score_fn with `torch.topk` (the
                         code before; once)
  faiss selector / row   one search per learner with an `IDSelectorNot(IDSelectorBatch)`
                         of its watched courses: the other exact exclusion, timed on the first
                         2,000 learners and scaled to all (`extrapolated` column)
`same_ids` is the share of (learner, rank) entries equal to the torch path's, `same_sets`
the share of learners with the same top-100 set (they differ only where float rounding
reorders near-equal scores).

Part "sizes": the exact search with the exclusion at 1k, 3k, 10k, 30k, 60k and 100k courses
(200M scores each: 200,000 learners at 1k, 2,000 at 100k), 3 interleaved rounds, medians:
faiss's search without the exclusion (the peer), the default path (masked up to 65,536
courses, the over-fetch above), the masked path at every size and the over-fetch path.
`--parts sizes` alone writes results/retrieval_sizes.json (a run of some parts never
replaces retrieval.json).

Part "blas": faiss's flat search of 1,999 learners (just under faiss-cpu 1.15's threshold for
multiplying with BLAS, 2,000 queries at d = 64) at 10k and 100k courses, under faiss's default
threshold and under ours (BLAS from 4 queries), 3 interleaved rounds: ms per query.
`--parts blas` alone writes results/retrieval_blas.json.

Part "recommend" (`--repeats R`: R measurements in turn, each with fresh data and buffers, to
show how much the fresh-buffer peer moves): `NCFRecommender.recommend` for every learner (a
random two-tower with the default towers, 20 draws of watched courses each, excluded), top
100 over 10,000 courses, against the matmul alone of the same shape on the learner tower's
output (fresh buffers with torch and with numpy, and torch into a reused buffer), interleaved
in 10 slices of learners (so all see the same load); the learner tower is timed apart
(recommend() includes it).

Part "ann" (clustered data: 256 Gaussian clusters, so neighbourhoods exist): ItemIndex
'hnsw' and 'ivf' with the default settings of conf/blend/default.yaml, recall@100 against
exact top-100, build and search CPU seconds, at 10k and 100k courses (10,000 queries).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from benchmarks.common import peak_rss_gib, print_table, write_result

DIM = 64
TOP = 100
CHUNK = 4096
N_COURSES = 10_000
MEAN_WATCHED = 20
SELECTOR_SAMPLE = 2_000
PARTS = ("exact", "sizes", "blas", "recommend", "ann")


def exact_data(n: int, m: int = N_COURSES, seed: int = 0):
    """(queries (n, d), items (m, d)) float32, watched CSR (n, m): geometric counts, mean 20."""
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((n, DIM), dtype=np.float32) / np.sqrt(DIM)).astype(np.float32)
    items = rng.standard_normal((m, DIM), dtype=np.float32)
    counts = np.minimum(rng.geometric(1 / MEAN_WATCHED, n), 2_000)
    rows = np.repeat(np.arange(n), counts)
    cols = rng.integers(0, m, rows.size)
    watched = sp.csr_array((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, m))
    watched.sum_duplicates()  # repeats collapse: the pattern is the set
    return q, items, watched


def clustered_data(n: int, m: int, seed: int = 0, n_clusters: int = 256):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, DIM), dtype=np.float32)
    items = centers[rng.integers(0, n_clusters, m)]
    items = items + 0.5 * rng.standard_normal((m, DIM), dtype=np.float32)
    q = centers[rng.integers(0, n_clusters, n)] + 0.5 * rng.standard_normal((n, DIM), np.float32)
    return np.ascontiguousarray(q, np.float32), np.ascontiguousarray(items, np.float32)


class Clock:
    """Wall and CPU seconds of the last `run` (1 thread: CPU time is the work, also when the
    shared box is busy and wall time is not)."""

    wall = cpu = 0.0

    def run(self, fn: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.wall, self.cpu = time.perf_counter() - wall, time.process_time() - cpu
        return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(CPU seconds, result)."""
    clock = Clock()
    out = clock.run(fn)
    return clock.cpu, out


@contextlib.contextmanager
def torch_only() -> Iterator[None]:
    """top_k_by_dot without faiss: its fallback path."""
    import ncf.retrieval as retrieval

    keep = retrieval.load_faiss
    retrieval.load_faiss = lambda: None
    try:
        yield
    finally:
        retrieval.load_faiss = keep


def matmul_alone(
    q: np.ndarray, items: np.ndarray, reuse: bool = False, backend: str = "torch"
) -> float:
    """`q[a:b] @ items.T` per chunk of 4,096: into a fresh (chunk, m) buffer each time (the
    issue's peer: first-touch page faults of 164 MB per chunk are most of its time), or with
    `reuse` into one buffer (the arithmetic alone: the floor). backend 'torch' (its BLAS:
    MKL in the PyPI wheels) or 'numpy' (OpenBLAS in its wheels)."""
    shape = (min(CHUNK, q.shape[0]), items.shape[0])
    if backend == "numpy":
        qb, item_t, mul = q, np.ascontiguousarray(items.T), np.matmul  # item_t (d, m)
        out = np.empty(shape, np.float32) if reuse else None
    else:
        qb, item_t, mul = torch.from_numpy(q), torch.from_numpy(items).T.contiguous(), torch.mm
        out = torch.empty(shape) if reuse else None
    check = 0.0
    for a in range(0, q.shape[0], CHUNK):
        rows = qb[a : a + CHUNK]
        s = mul(rows, item_t, out=out[: rows.shape[0]]) if reuse else rows @ item_t
        check += float(s[0, 0])
    return check


def selector_per_row(q: np.ndarray, items: np.ndarray, watched: sp.csr_array, n: int):
    import faiss

    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    for i in range(n):
        banned = watched.indices[watched.indptr[i] : watched.indptr[i + 1]].astype(np.int64)
        params = faiss.SearchParameters(sel=faiss.IDSelectorNot(faiss.IDSelectorBatch(banned)))
        index.search(q[i : i + 1], TOP, params=params)


def agreement(got: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]):
    same_ids = float((got[0] == ref[0]).mean())
    a, b = np.sort(got[0], axis=1), np.sort(ref[0], axis=1)
    return same_ids, float((a == b).all(axis=1).mean())


@contextlib.contextmanager
def over_fetch_only() -> Iterator[None]:
    """top_k_by_dot's exclusion by faiss's search with the over-fetch (the masked path off)."""
    import ncf.retrieval as retrieval

    keep = retrieval.MAX_ITEMS
    retrieval.MAX_ITEMS = 0
    try:
        yield
    finally:
        retrieval.MAX_ITEMS = keep


@contextlib.contextmanager
def topk_evaluation() -> Iterator[None]:
    """evaluation.full_ranking_topk with torch.topk on every chunk (the select off)."""
    import evaluation.full_ranking as full_ranking

    keep = full_ranking._threshold_path
    full_ranking._threshold_path = lambda s, k: False
    try:
        yield
    finally:
        full_ranking._threshold_path = keep


def evaluation_top_k(q: np.ndarray, items: np.ndarray, watched: sp.csr_array, factors: bool):
    """evaluation's full ranking of the same products, the watched courses excluded, as the
    two-tower's validation and test pass them (`evaluation.Factors`: multiplied block by
    block) or as a score_fn multiplying each chunk of learners (torch, a fresh (chunk, m)
    buffer: evaluation's own default chunk of 2,048); (items, scores) (n, TOP)."""
    from evaluation import Factors, full_ranking_topk

    qt, it_t = torch.from_numpy(q), torch.from_numpy(items).T.contiguous()  # (n, d), (d, m)
    source = Factors(q, items) if factors else (lambda u: qt[torch.from_numpy(u)] @ it_t)
    return full_ranking_topk(
        source, TOP, users=np.arange(q.shape[0]), exclude=watched, device="cpu", copy=False,
        return_scores=True,
    )  # fmt: skip


@contextlib.contextmanager
def masked_always() -> Iterator[None]:
    """top_k_by_dot's masked path at every catalogue size (its limit lifted)."""
    import ncf.retrieval as retrieval

    keep = retrieval.MAX_ITEMS
    retrieval.MAX_ITEMS = 1 << 62
    try:
        yield
    finally:
        retrieval.MAX_ITEMS = keep


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, Any]]:
    """{name: (median CPU seconds, last result)}: every call once per round, `repeats`
    rounds, so the ratios between them see the same state of the box."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    last: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in calls.items():
            seconds, last[name] = timed(fn)
            times[name].append(seconds)
    return {name: (float(np.median(t)), last[name]) for name, t in times.items()}


def exact_rows(n: int, repeats: int = 3) -> list[dict[str, Any]]:
    import faiss

    from ncf.retrieval import top_k_by_dot

    q, items, watched = exact_data(n)
    rows: list[dict[str, Any]] = []

    def row(method: str, exclusion: bool, seconds: float, **extra: Any) -> None:
        rows.append({"method": method, "learners": n, "courses": items.shape[0],
                     "exclusion": exclusion, "cpu_seconds": round(seconds, 3), **extra})  # fmt: skip

    def over_fetch(exclude: Any = watched) -> Any:
        with over_fetch_only():
            return top_k_by_dot(q, items, TOP, exclude=exclude, device="cpu")

    matmul_alone(q[:CHUNK], items)  # warm-up: first-touch allocations, BLAS and faiss setup
    top_k_by_dot(q[:CHUNK], items, TOP, exclude=watched[:CHUNK], device="cpu")
    index = faiss.IndexFlatIP(DIM)
    index.add(items)
    got = interleaved(
        {
            "matmul alone": lambda: matmul_alone(q, items),
            "matmul into a reused buffer": lambda: matmul_alone(q, items, reuse=True),
            "matmul alone, numpy": lambda: matmul_alone(q, items, backend="numpy"),
            "faiss IndexFlatIP": lambda: index.search(q, TOP),
            "top_k_by_dot": lambda: top_k_by_dot(q, items, TOP, device="cpu"),
            "top_k_by_dot, faiss search": lambda: over_fetch(None),
            "top_k_by_dot, exclusion": lambda: top_k_by_dot(
                q, items, TOP, exclude=watched, device="cpu"
            ),
            "top_k_by_dot, exclusion by over-fetch": over_fetch,
            "evaluation, Factors": lambda: evaluation_top_k(q, items, watched, True),
            "evaluation, score_fn": lambda: evaluation_top_k(q, items, watched, False),
        },
        repeats,
    )
    floor, flat_s = got["matmul alone"][0], got["faiss IndexFlatIP"][0]
    row("matmul alone", False, floor)
    row("matmul into a reused buffer", False, got["matmul into a reused buffer"][0])
    row("matmul alone, numpy", False, got["matmul alone, numpy"][0])
    row("faiss IndexFlatIP", False, flat_s)
    for ex in (None, watched):  # the old path, once: it is not the one compared with faiss
        with torch_only():
            old_s, old = timed(lambda ex=ex: top_k_by_dot(q, items, TOP, exclude=ex, device="cpu"))
        row("top_k_by_dot, torch", ex is not None, old_s)
        names = ["top_k_by_dot", "top_k_by_dot, faiss search"] if ex is None else [
            "top_k_by_dot, exclusion", "top_k_by_dot, exclusion by over-fetch"]  # fmt: skip
        for name in names:
            seconds, new = got[name]
            method = {"top_k_by_dot": "top_k_by_dot (default: masked + threshold select)",
                      "top_k_by_dot, exclusion": "top_k_by_dot (default: masked + threshold select)",
                      "top_k_by_dot, faiss search": "top_k_by_dot, faiss search (default above 65,536)",
                      }.get(name, "top_k_by_dot, faiss search + over-fetch")  # fmt: skip
            same_ids, same_sets = agreement(new, old)
            row(method, ex is not None, seconds, same_ids=same_ids, same_sets=same_sets)
            if ex is not None:
                hit = ex[np.repeat(np.arange(n), TOP), np.maximum(new[0], 0).ravel()]
                rows[-1]["excluded_returned"] = int(hit.sum())  # must be 0
    with topk_evaluation():  # the old path, once, as the torch path above
        old_s, old = timed(lambda: evaluation_top_k(q, items, watched, False))
    row("evaluation full_ranking_topk, score_fn + torch.topk (before)", True, old_s)
    for name, method in (
        ("evaluation, score_fn", "evaluation full_ranking_topk, score_fn (threshold select)"),
        ("evaluation, Factors", "evaluation full_ranking_topk, Factors (the two-tower's)"),
    ):
        seconds, new = got[name]
        same_ids, same_sets = agreement(new, old)
        row(method, True, seconds, same_ids=same_ids, same_sets=same_sets)
    sample = min(n, SELECTOR_SAMPLE)
    sel_s, _ = timed(lambda: selector_per_row(q, items, watched, sample))
    row("faiss selector / row", True, sel_s * n / sample, extrapolated=f"from {sample:,} rows")
    for r in rows:
        r["time_over_matmul"] = round(r["cpu_seconds"] / floor, 2)
        r["time_over_matmul_numpy"] = round(r["cpu_seconds"] / got["matmul alone, numpy"][0], 2)
        r["time_over_faiss_flat"] = round(r["cpu_seconds"] / flat_s, 2)
    rows[0]["watched_per_learner"] = round(watched.nnz / n, 2)
    rows[0]["watched_max"] = int(np.diff(watched.indptr).max())
    rows[0]["repeats"] = repeats
    return rows


def size_rows(courses: list[int], scores: int, repeats: int = 3) -> list[dict[str, Any]]:
    """How the exact search with the exclusion scales with the catalogue: at each size, as many
    learners as give `scores` scores in all; faiss's search without the exclusion (the peer),
    the default path and the over-fetch, interleaved, medians."""
    import faiss

    from ncf.retrieval import MAX_ITEMS, top_k_by_dot

    rows = []
    for m in courses:
        n = max(1, scores // m)
        q, items, watched = exact_data(n, m)
        index = faiss.IndexFlatIP(DIM)
        index.add(items)

        def over_fetch(q=q, items=items, watched=watched) -> Any:
            with over_fetch_only():
                return top_k_by_dot(q, items, TOP, exclude=watched, device="cpu")

        def masked(q=q, items=items, watched=watched) -> Any:
            with masked_always():
                return top_k_by_dot(q, items, TOP, exclude=watched, device="cpu")

        got = interleaved(
            {
                "faiss": lambda q=q, index=index: index.search(q, TOP),
                "masked": masked,
                "default": lambda q=q, items=items, watched=watched: top_k_by_dot(
                    q, items, TOP, exclude=watched, device="cpu"
                ),
                "over-fetch": over_fetch,
            },
            repeats,
        )
        flat = got["faiss"][0]
        rows.append({
            "courses": m, "learners": n, "default_path": "masked" if m <= MAX_ITEMS else "over-fetch",
            "faiss_flat_s": round(flat, 3),
            "default_over_faiss_flat": round(got["default"][0] / flat, 2),
            "masked_over_faiss_flat": round(got["masked"][0] / flat, 2),
            "over_fetch_over_faiss_flat": round(got["over-fetch"][0] / flat, 2),
            "same_sets": agreement(got["default"][1], got["over-fetch"][1])[1],
        })  # fmt: skip
    return rows


def blas_rows(courses: list[int], queries: int = 1_999, repeats: int = 3) -> list[dict[str, Any]]:
    """faiss's flat search of `queries` learners (just under faiss-cpu 1.15's BLAS threshold of
    2,000 at d = 64) under faiss's default threshold and under ours (BLAS from 4 queries,
    `ncf.ann.blas_from_few_queries`), interleaved, medians: milliseconds per query."""
    import faiss

    from ncf.ann import blas_from_few_queries

    rows = []
    for m in courses:
        q, items, _ = exact_data(queries, m)
        index = faiss.IndexFlatIP(DIM)
        index.add(items)

        def ours(q=q, index=index) -> Any:
            with blas_from_few_queries(faiss, DIM):
                return index.search(q, TOP)

        got = interleaved({"default": lambda q=q, index=index: index.search(q, TOP),
                           "ours": ours}, repeats)  # fmt: skip
        default_ms, ours_ms = (1000 * got[k][0] / queries for k in ("default", "ours"))
        rows.append({
            "courses": m, "queries": queries,
            "faiss_default_threshold": int(faiss.cvar.distance_compute_blas_threshold),
            "default_ms_per_query": round(default_ms, 4), "blas_ms_per_query": round(ours_ms, 4),
            "default_over_blas": round(default_ms / ours_ms, 2),
        })  # fmt: skip
    return rows


def random_recommender(n: int, m: int, chunk: int = CHUNK, device: str = "cpu"):
    """A random two-tower (default towers) over n learners with ~20 watched courses each,
    50 co-watch neighbours per course (also what `bench_ncf_speed --part recommend` serves)."""
    from ncf.inputs import Snapshot
    from ncf.model import TwoTower
    from ncf.recommender import NCFRecommender
    from watchlog.idmap import IdMap

    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(n), MEAN_WATCHED)
    hist = sp.csr_matrix(
        (np.ones(rows.size, np.float32), (rows, rng.integers(0, m, rows.size))), shape=(n, m)
    )
    hist.sum_duplicates()
    hist.data[:] = 1.0
    brow = np.repeat(np.arange(m), 50)
    bags = sp.csr_matrix(
        (rng.random(brow.size).astype(np.float32), (brow, rng.integers(0, m, brow.size))),
        shape=(m, m),
    )
    torch.manual_seed(0)
    return NCFRecommender(
        TwoTower(n, m), Snapshot("bench", hist, hist, bags), IdMap(np.arange(n), "learner_id"),
        IdMap(np.arange(m), "course_id"), device=device, chunk_size=chunk,
    )  # fmt: skip


def recommend_row(n: int, slices: int = 10) -> dict[str, Any]:
    """recommend() for all n learners against the matmul alone of the same shape (on the
    learner tower's output), interleaved: `slices` slices of learners, each recommended
    and then multiplied, so both see the same load on a shared box (a busy sibling
    hyperthread slows a matmul 2x, in CPU time too). The learner tower is timed apart."""
    rec = random_recommender(n, N_COURSES)
    learners = np.arange(n)
    clock, res = Clock(), {"learners": n, "courses": N_COURSES, "top": TOP, "slices": slices}
    q = clock.run(lambda: rec._queries(learners))  # (n, d) the learner tower, all learners
    res.update(learner_tower_s=clock.wall, learner_tower_cpu_s=clock.cpu)
    q, items = q.numpy(), rec._items().numpy()
    totals = np.zeros(6)  # recommend wall, cpu; matmul wall, cpu; reused cpu; numpy cpu
    for part in np.array_split(learners, slices):
        ids, _ = clock.run(lambda part=part: rec.recommend(part, N=TOP))
        assert ids.shape == (part.size, TOP)
        totals[:2] += (clock.wall, clock.cpu)
        clock.run(lambda part=part: matmul_alone(q[part], items))
        totals[2:4] += (clock.wall, clock.cpu)
        clock.run(lambda part=part: matmul_alone(q[part], items, reuse=True))
        totals[4] += clock.cpu
        clock.run(lambda part=part: matmul_alone(q[part], items, backend="numpy"))
        totals[5] += clock.cpu
    res.update(recommend_s=totals[0], recommend_cpu_s=totals[1])
    res.update(matmul_s=totals[2], matmul_cpu_s=totals[3], d=int(items.shape[1]))
    res["cpu_over_matmul"] = res["recommend_cpu_s"] / res["matmul_cpu_s"]
    res["matmul_reused_cpu_s"] = totals[4]
    res["cpu_over_matmul_reused"] = res["recommend_cpu_s"] / totals[4]
    res["matmul_numpy_cpu_s"] = totals[5]
    res["cpu_over_matmul_numpy"] = res["recommend_cpu_s"] / totals[5]
    res["cpu_over_faster_matmul"] = res["recommend_cpu_s"] / min(totals[3], totals[5])
    retrieval_cpu = res["recommend_cpu_s"] - res["learner_tower_cpu_s"]
    res["retrieval_cpu_over_matmul"] = retrieval_cpu / res["matmul_cpu_s"]
    res["peak_rss_gib"] = peak_rss_gib()
    return {k: round(float(v), 3) if isinstance(v, float | np.floating) else v
            for k, v in res.items()}  # fmt: skip


def ann_rows(courses: list[int], n_queries: int) -> list[dict[str, Any]]:
    from ncf.ann import ItemIndex
    from ncf.retrieval import top_k_by_dot

    rows = []
    for m in courses:
        q, items = clustered_data(n_queries, m, seed=1)
        exact_s, exact = timed(lambda q=q, items=items: top_k_by_dot(q, items, TOP, device="cpu"))
        rows.append({"method": "exact", "courses": m, "queries": n_queries, "recall@100": 1.0,
                     "build_s": 0.0, "search_s": round(exact_s, 3)})  # fmt: skip
        for method in ("hnsw", "ivf"):
            build_s, index = timed(lambda method=method, items=items: ItemIndex(method).fit(items))
            search_s, got = timed(
                lambda index=index, q=q, items=items: top_k_by_dot(
                    q, items, TOP, device="cpu", method=index
                )
            )
            hits = [np.intersect1d(a, b).size for a, b in zip(got[0], exact[0], strict=True)]
            rows.append({"method": method, "courses": m, "queries": n_queries,
                         "recall@100": round(float(np.mean(hits)) / TOP, 4),
                         "build_s": round(build_s, 3), "search_s": round(search_s, 3),
                         "settings": repr(index)})  # fmt: skip
    return rows


def same_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with every column (blank where it has none), for the printed table."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k, "") for k in keys} for r in rows]


def result_name(quick: bool, parts: list[str]) -> str:
    """results/retrieval.json for every part; a run of some parts writes its own file
    (retrieval_sizes.json, ...) so it never replaces the rows of the others."""
    name = "retrieval" if set(parts) == set(PARTS) else "retrieval_" + "_".join(parts)
    return name + "_quick" if quick else name


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument(
        "--repeats", type=int, default=1, help="part recommend: measured this many times, in turn"
    )
    args = parser.parse_args(argv)
    import faiss

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS too (the numpy peer)
    out: dict[str, list[dict[str, Any]]] = {}
    if "exact" in args.parts:
        out["exact"] = exact_rows(20_000 if args.quick else 100_000)
        print_table(same_columns(out["exact"]), f"exact top-{TOP}, d={DIM}, 1 thread")
    if "sizes" in args.parts:
        sizes = (
            [1_000, 10_000, 30_000]
            if args.quick
            else [1_000, 3_000, 10_000, 30_000, 60_000, 100_000]
        )
        out["sizes"] = size_rows(sizes, 20_000_000 if args.quick else 200_000_000)
        print_table(out["sizes"], f"exact top-{TOP} with the exclusion, by catalogue size")
    if "blas" in args.parts:
        out["blas"] = blas_rows([10_000, 100_000])
        print_table(out["blas"], "faiss flat search, 1,999 queries: its BLAS threshold vs ours")
    if "recommend" in args.parts:
        n = 50_000 if args.quick else 1_000_000
        out["recommend"] = [
            {"repeat": i + 1, **recommend_row(n)} if args.repeats > 1 else recommend_row(n)
            for i in range(args.repeats)
        ]
        print_table(out["recommend"], f"recommend(), top-{TOP} of {N_COURSES:,}, 1 thread")
    if "ann" in args.parts:
        courses = [10_000, 30_000] if args.quick else [10_000, 100_000]
        out["ann"] = ann_rows(courses, 2_000 if args.quick else 10_000)
        print_table(same_columns(out["ann"]), f"approximate top-{TOP}: recall, 1 thread")
    rows = [{"part": part, **r} for part, part_rows in out.items() for r in part_rows]
    write_result(
        result_name(args.quick, args.parts),
        rows,
        units={
            "cpu_seconds": "CPU seconds of one call (1 thread; wall clock on a busy box is not)",
            "time_over_matmul": "cpu_seconds / cpu_seconds of matmul alone (same data, process)",
            "time_over_matmul_numpy": "cpu_seconds / numpy's (OpenBLAS) matmul alone",
            "time_over_faiss_flat": "cpu_seconds / cpu_seconds of faiss IndexFlatIP.search",
            "same_ids": "share of (learner, rank) entries equal to the torch path's",
            "same_sets": "share of learners whose top-100 set equals the torch path's "
            "(sizes: the over-fetch path's)",
            "default_over_faiss_flat": "top_k_by_dot with the exclusion / faiss without (CPU s)",
            "over_fetch_over_faiss_flat": "the over-fetch path with the exclusion / faiss without",
            "masked_over_faiss_flat": "the masked path with the exclusion / faiss without",
            "default_over_blas": "faiss's default BLAS threshold / ours, time per query",
            "recall@100": "mean |approximate top-100 & exact top-100| / 100",
            "recommend_s": "NCFRecommender.recommend, all learners, wall clock (_cpu_s: CPU)",
            "cpu_over_matmul": "recommend_cpu_s / matmul_cpu_s (learner tower included)",
            "cpu_over_matmul_reused": "recommend_cpu_s / the reused-buffer matmul's CPU s",
            "cpu_over_matmul_numpy": "recommend_cpu_s / numpy's (OpenBLAS) fresh-buffer matmul",
            "cpu_over_faster_matmul": "recommend_cpu_s / the faster of the two fresh matmuls",
            "retrieval_cpu_over_matmul": "(recommend - learner tower) / matmul, CPU seconds",
            "peak_rss_gib": "GiB, peak resident memory of the process so far",
        },
        threads=1,
        cpu_count=os.cpu_count(),
        load_average_at_end=list(os.getloadavg()),
        peak_rss_gib=peak_rss_gib(),
        faiss_version=faiss.__version__,
    )
    return out


if __name__ == "__main__":
    main()
