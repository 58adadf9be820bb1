"""Co-watch similarity at 10,000,000 watch events: time, peak memory, growth, and a peer.

    python -m benchmarks.bench_cowatch            # full run (~5 min on 2 cores)
    python -m benchmarks.bench_cowatch --quick    # 1M events only, for a smoke test

Data: a deterministic heavy-tailed learner x course matrix (`heavy_tailed_watches`):
10,000 courses with Zipf-like popularity (weight 1 / (rank + 10)), learners with lognormal
activity (sigma 1.2), 70% of a learner's events inside one of 50 topics (so neighbours have
structure), sampled with replacement, so repeated (learner, course) pairs collapse when the
matrix is built: the table reports the nonzeros left after that dedup. Sizes scale learners
with events (100,000 learners per 1M events), keeping activity per learner constant.

Each measurement runs in a fresh Python process, so `peak_rss_gib` is that process's own
peak resident memory (Python + scipy + the loaded input + the computation) and `base_rss_gib`
what it held just before the timed call. `seconds` is the best wall time of `repeat` calls and
`cpu_seconds` the best process CPU time (both libraries are single-threaded here, so CPU time
is the steadier figure when other jobs share the machine; the ratio uses it).

Peer: scikit-learn's `cosine_similarity` on the sparse transpose (one unchunked
course x course product, float64), diagonal removed, then a per-row top-k by `np.lexsort`
with the same tie-break (value descending, then course index). Agreement = share of our
top-k (row, course) entries the peer also kept; max_abs_diff over the entries both kept.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.common import peak_rss_gib, print_table, run_child, write_result

N_COURSES = 10_000
LEARNERS_PER_EVENT = 0.1
TOP_K = 50
BLOCK_SIZE = 256


def heavy_tailed_watches(
    n_events: int,
    n_learners: int,
    n_courses: int = N_COURSES,
    *,
    n_topics: int = 50,
    own_topic: float = 0.7,
    seed: int = 0,
) -> sp.csr_matrix:
    """Learner x course CSR float32 of watch counts from `n_events` sampled events."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / (np.arange(n_courses) + 10.0)  # Zipf-like, exponent 1
    pop = pop[rng.permutation(n_courses)]  # popularity not aligned with course index
    topic = np.arange(n_courses) % n_topics
    activity = rng.lognormal(0.0, 1.2, n_learners)  # heavy-tailed learner activity
    learner_cdf = np.cumsum(activity) / activity.sum()
    learner = np.searchsorted(learner_cdf, rng.random(n_events), side="right")
    learner = np.minimum(learner, n_learners - 1).astype(np.int32)
    learner_topic = rng.integers(0, n_topics, n_learners)
    # Courses laid out topic by topic: one cumulative popularity over that order serves both
    # the whole catalogue (u * total) and one topic (its start + u * its mass).
    by_topic = np.argsort(topic, kind="stable")
    cdf = np.cumsum(pop[by_topic])
    topic_start = np.concatenate([[0.0], cdf])[
        np.searchsorted(topic[by_topic], np.arange(n_topics))
    ]
    topic_mass = np.bincount(topic, weights=pop, minlength=n_topics)
    t = learner_topic[learner]
    u = rng.random(n_events)
    target = np.where(
        rng.random(n_events) < own_topic, topic_start[t] + u * topic_mass[t], u * cdf[-1]
    )
    course = by_topic[np.minimum(np.searchsorted(cdf, target, side="right"), n_courses - 1)]
    x = sp.csr_matrix(
        (np.ones(n_events, dtype=np.float32), (learner, course.astype(np.int32))),
        shape=(n_learners, n_courses),
    )
    x.sum_duplicates()
    return x


# ---- the two contenders ---------------------------------------------------------------------
def _ours(x: sp.csr_matrix, measure: str, block_size: int) -> tuple[sp.csr_matrix, int]:
    from watchlog.cowatch import CoWatchSimilarity

    est = CoWatchSimilarity(measure, top_k=TOP_K, block_size=block_size).fit(x)
    return est.similarity_, est.n_candidate_pairs_


def _peer_sklearn(x: sp.csr_matrix, measure: str, block_size: int) -> tuple[sp.csr_matrix, int]:
    from sklearn.metrics.pairwise import cosine_similarity

    b = (x > 0).astype(np.float32)
    s = cosine_similarity(b.T.tocsr(), dense_output=False).tocsr()  # (courses, courses) float64
    s.setdiag(0)
    s.eliminate_zeros()
    s.sort_indices()
    rows, cols, vals = [], [], []
    for i in range(s.shape[0]):  # the usual per-row top-k
        lo, hi = s.indptr[i], s.indptr[i + 1]
        c = s.indices[lo:hi]
        v = s.data[lo:hi].astype(np.float32)
        top = np.lexsort((c, -v))[:TOP_K]
        rows.append(np.full(len(top), i))
        cols.append(c[top])
        vals.append(v[top])
    out = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=s.shape
    )
    out.sort_indices()
    return out, int(s.nnz)


METHODS = {"watchlog": _ours, "sklearn cosine_similarity + per-row lexsort": _peer_sklearn}


def _run(task: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in a fresh process: load input, time `repeat` calls, save the result."""
    import psutil

    x = sp.load_npz(task["input"]).tocsr()
    fn = METHODS[task["method"]]
    base = psutil.Process().memory_info().rss / 2**30
    best, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(task["repeat"]):
        result = None
        start, start_cpu = time.perf_counter(), time.process_time()
        result, candidates = fn(x, task["measure"], task["block_size"])
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    if task.get("save"):
        sp.save_npz(task["save"], result, compressed=False)
    return {
        "seconds": best,
        "cpu_seconds": best_cpu,
        "peak_rss_gib": peak_rss_gib(),
        "base_rss_gib": base,
        "pairs_kept": int(result.nnz),
        "pairs_before_topk": candidates,
    }


def _measure(task: dict[str, Any]) -> dict[str, Any]:
    """Run `_run(task)` in a fresh interpreter (so the peak is this measurement's only);
    task and answer travel as JSON on the command line and stdout."""
    return run_child("benchmarks.bench_cowatch", "--worker", json.dumps(task))


def _agreement(ours: sp.csr_matrix, peer: sp.csr_matrix) -> tuple[float, float]:
    """(share of our entries the peer kept too, max |difference| on shared entries)."""
    a, b = ours.tocoo(), peer.tocoo()
    n = ours.shape[1]
    ka = a.row.astype(np.int64) * n + a.col
    kb = b.row.astype(np.int64) * n + b.col
    shared, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    diff = float(np.abs(a.data[ia] - b.data[ib]).max()) if len(shared) else 0.0
    return len(shared) / max(len(ka), 1), diff


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M events only")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per measurement")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_run(json.loads(args.worker))), flush=True)
        return []
    sizes = [1_000_000] if args.quick else [1_000_000, 3_000_000, 10_000_000]
    biggest = sizes[-1]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_cowatch.") as tmp:
        tmp = Path(tmp)
        inputs, nnz, learners = {}, {}, {}
        for n_events in sizes:
            start = time.perf_counter()
            n_learners = int(n_events * LEARNERS_PER_EVENT)
            x = heavy_tailed_watches(n_events, n_learners, seed=0)
            inputs[n_events] = str(tmp / f"x{n_events}.npz")
            sp.save_npz(inputs[n_events], x, compressed=False)
            nnz[n_events], learners[n_events] = int(x.nnz), n_learners
            deg = np.diff(x.indptr)
            print(
                f"input {n_events:,} events -> {x.nnz:,} nonzeros after dedup; "
                f"{n_learners:,} learners (active {np.count_nonzero(deg):,}, max {deg.max():,} "
                f"courses), {N_COURSES:,} courses; generated in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
            del x, deg

        plan = []
        for measure in ("cosine", "jaccard", "pmi"):
            plan.append(("watchlog", measure, biggest, BLOCK_SIZE))
        for n_events in sizes[:-1]:
            plan.append(("watchlog", "cosine", n_events, BLOCK_SIZE))
        for block in (64, 2048):
            plan.append(("watchlog", "cosine", biggest, block))
        for n_events in sizes:
            plan.append(("sklearn cosine_similarity + per-row lexsort", "cosine", n_events, 0))

        results = {}
        for method, measure, n_events, block in plan:
            save = None
            if measure == "cosine" and block in (BLOCK_SIZE, 0):
                save = str(tmp / f"{method[:5]}-{n_events}.npz")
            task = dict(
                method=method,
                measure=measure,
                input=inputs[n_events],
                block_size=block,
                repeat=args.repeat,
                save=save,
            )
            res = _measure(task)
            results[(method, measure, n_events, block)] = (res, save)
            print(
                f"  {method:<45} {measure:<8} {n_events:>11,} events  block {block:>5}  "
                f"{res['seconds']:7.2f} s (cpu {res['cpu_seconds']:.2f})  "
                f"peak {res['peak_rss_gib']:.2f} GiB",
                flush=True,
            )

        peer_name = "sklearn cosine_similarity + per-row lexsort"
        for (method, measure, n_events, block), (res, save) in results.items():
            row = {
                "method": method,
                "measure": measure,
                "events": n_events,
                "learners": learners[n_events],
                "nonzeros": nnz[n_events],
                "top_k": TOP_K,
                "block_size": block if block else "-",
                "seconds": round(res["seconds"], 3),
                "cpu_seconds": round(res["cpu_seconds"], 3),
                "peak_rss_gib": round(res["peak_rss_gib"], 3),
                "base_rss_gib": round(res["base_rss_gib"], 3),
                "pairs_before_topk": res["pairs_before_topk"],
                "pairs_kept": res["pairs_kept"],
                "peer_over_ours": "-",
                "agreement": "-",
                "max_abs_diff": "-",
            }
            peer = results.get((peer_name, "cosine", n_events, 0))
            if method == "watchlog" and measure == "cosine" and block == BLOCK_SIZE and peer:
                row["peer_over_ours"] = round(peer[0]["cpu_seconds"] / res["cpu_seconds"], 2)
                agree, diff = _agreement(sp.load_npz(save).tocsr(), sp.load_npz(peer[1]).tocsr())
                row["agreement"] = round(agree, 6)
                row["max_abs_diff"] = float(f"{diff:.3g}")
            rows.append(row)

    print_table(rows, f"co-watch similarity, top_k={TOP_K}, {N_COURSES:,} courses")
    write_result(
        "cowatch",
        rows,
        units={
            "events": "watch events sampled (before dedup)",
            "nonzeros": "learner x course nonzeros after dedup",
            "seconds": f"best of {args.repeat} calls, wall clock",
            "cpu_seconds": f"best of {args.repeat} calls, process CPU time (steadier on a shared machine)",
            "peak_rss_gib": "GiB, peak resident memory of the measuring process",
            "base_rss_gib": "GiB, resident memory before the timed calls (input loaded)",
            "pairs_before_topk": "off-diagonal co-watched (course, course) pairs",
            "pairs_kept": "stored similarities after top-k (no diagonal)",
            "peer_over_ours": "peer cpu_seconds / our cpu_seconds at the same size",
            "agreement": "share of our top-k entries also in the peer's top-k",
            "max_abs_diff": "max |ours - peer| over shared entries",
        },
        generator={
            "courses": N_COURSES,
            "popularity": "1/(rank+10), shuffled",
            "learner_activity": "lognormal(0, 1.2)",
            "topics": 50,
            "own_topic_share": 0.7,
            "learners_per_event": LEARNERS_PER_EVENT,
            "seed": 0,
        },
        load_average_at_end=list(os.getloadavg()),
        threads={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    )
    return rows


if __name__ == "__main__":
    main()
