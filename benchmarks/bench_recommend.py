"""Top-K retrieval at 1,000,000 learners x 10,000 courses: `ncf.retrieval.top_k_by_dot`
against a plain chunked torch matmul of the same shape.

    python -m benchmarks.bench_recommend            # 100k, 300k, 1M learners (~5 min on 2 cores)
    python -m benchmarks.bench_recommend --quick    # 20k and 50k learners, a smoke test

Data (deterministic, seed 0): learner and course embeddings, d = 64, float32 N(0, 1/d) and
N(0, 1); per learner 20 uniform draws of already-watched courses (repeats collapse, so
slightly fewer than 20 on average: the table gives the exact count), excluded from the lists.

Measured, each in a fresh Python process so `peak_rss_gib` (VmHWM) is that measurement's own:
  top_k_by_dot           top-100 per learner with the exclusion, (n, 100) int64 + float32 out;
  top_k_by_dot, no excl. the same without `exclude` (what the exclusion costs);
  matmul only (peer)     for each chunk of learners `q[a:b] @ items.T` into a fresh
                         (chunk, m) float32 tensor, nothing else: the floor any chunked
                         top-K by dot product pays.
GFLOP/s = 2 n m d / seconds for every row (the matmul's arithmetic; top-k and masking add
time, not FLOPs), so the ratio of GFLOP/s is the ratio of wall times. All use the same chunk
size (default 4,096 learners) and the same torch threads (`--threads`, default torch's: all
cores). Best of `--repeat`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from benchmarks.common import peak_rss_gib, print_table, run_child, write_result

N_COURSES = 10_000
DIM = 64
TOP = 100
WATCHED_DRAWS = 20
CHUNK = 4096
METHODS = ("top_k_by_dot", "top_k_by_dot, no exclude", "matmul only (peer)")


def make_data(n: int, m: int = N_COURSES, d: int = DIM, seed: int = 0):
    """(queries (n, d), items (m, d)) float32 and the (n, m) CSR of watched courses."""
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
    items = rng.standard_normal((m, d), dtype=np.float32)
    cols = rng.integers(0, m, (n, WATCHED_DRAWS)).ravel()
    rows = np.repeat(np.arange(n), WATCHED_DRAWS)
    watched = sp.csr_matrix(
        (np.ones(cols.size, dtype=np.float32), (rows, cols)), shape=(n, m)
    )  # duplicates summed: the pattern is the set of watched courses
    watched.sum_duplicates()
    return q, items, watched


def _matmul_only(q: torch.Tensor, items: torch.Tensor, chunk: int) -> float:
    """The peer: the same chunked products, results dropped; returns a checksum."""
    item_t = items.T.contiguous()  # (d, m)
    check = 0.0
    for a in range(0, q.shape[0], chunk):
        s = q[a : a + chunk] @ item_t  # (chunk, m) fresh buffer, as top_k_by_dot makes
        check += float(s[0, 0])
    return check


def _run(task: dict[str, Any]) -> dict[str, Any]:
    from ncf.retrieval import top_k_by_dot

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    q, items, watched = make_data(task["n"])
    qt, it = torch.from_numpy(q), torch.from_numpy(items)
    base = peak_rss_gib()
    best, out = float("inf"), None
    for _ in range(task["repeat"]):
        out = None
        start = time.perf_counter()
        if task["method"] == "matmul only (peer)":
            out = _matmul_only(qt, it, task["chunk"])
        else:
            ex = watched if task["method"] == "top_k_by_dot" else None
            out = top_k_by_dot(qt, it, TOP, exclude=ex, chunk_size=task["chunk"], device="cpu")
        best = min(best, time.perf_counter() - start)
    res = {
        "seconds": best,
        "peak_rss_gib": peak_rss_gib(),
        "input_rss_gib": base,
        "threads": torch.get_num_threads(),
        "watched_per_learner": watched.nnz / task["n"],
    }
    if task["method"] == "top_k_by_dot":
        idx, scores = out
        # spot check: the first 50 learners' lists against numpy on the full score rows
        s = q[:50] @ items.T
        s[watched[:50].nonzero()] = -np.inf
        want = np.sort(s, axis=1)[:, ::-1][:, :TOP]
        res["max_abs_diff_first_50"] = float(np.abs(scores[:50] - want).max())
        res["excluded_returned"] = int(
            np.asarray(watched[np.repeat(np.arange(50), TOP), idx[:50].ravel()]).sum()
        )
    return res


def _measure(task: dict[str, Any]) -> dict[str, Any]:
    """One measurement in a fresh interpreter (its own peak memory)."""
    return run_child("benchmarks.bench_recommend", "--worker", json.dumps(task))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k and 50k learners only")
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per measurement")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="learners per matmul")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_run(json.loads(args.worker))), flush=True)
        return []
    sizes = [20_000, 50_000] if args.quick else [100_000, 300_000, 1_000_000]
    plan = [(n, "top_k_by_dot") for n in sizes]
    plan += [(sizes[-1], "top_k_by_dot, no exclude")]
    plan += [(n, "matmul only (peer)") for n in sizes]
    results = {}
    for n, method in plan:
        task = {
            "n": n,
            "method": method,
            "repeat": args.repeat,
            "chunk": args.chunk,
            "threads": args.threads,
        }
        res = _measure(task)
        results[(n, method)] = res
        print(
            f"  {method:<26} {n:>10,} learners  {res['seconds']:8.2f} s  "
            f"peak {res['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
    rows = []
    for (n, method), res in results.items():
        flops = 2.0 * n * N_COURSES * DIM
        peer = results[(n, "matmul only (peer)")]
        rows.append(
            {
                "method": method,
                "learners": n,
                "courses": N_COURSES,
                "d": DIM,
                "top": TOP if method != "matmul only (peer)" else "-",
                "watched_per_learner": round(res["watched_per_learner"], 3)
                if method == "top_k_by_dot"
                else "-",
                "seconds": round(res["seconds"], 3),
                "gflop_per_s": round(flops / res["seconds"] / 1e9, 2),
                "time_over_matmul": round(res["seconds"] / peer["seconds"], 2),
                "us_per_learner": round(res["seconds"] / n * 1e6, 2),
                "peak_rss_gib": round(res["peak_rss_gib"], 3),
                "input_rss_gib": round(res["input_rss_gib"], 3),
                "max_abs_diff_first_50": res.get("max_abs_diff_first_50", "-"),
                "excluded_returned": res.get("excluded_returned", "-"),
            }
        )
    print_table(rows, f"top-{TOP} by dot product, {N_COURSES:,} courses, d={DIM}")
    write_result(
        "recommend",
        rows,
        units={
            "seconds": f"best of {args.repeat} call(s), wall clock",
            "gflop_per_s": "2 * learners * courses * d / seconds / 1e9",
            "time_over_matmul": "seconds / seconds of the matmul-only peer at the same size",
            "us_per_learner": "microseconds per learner",
            "peak_rss_gib": "GiB, peak resident memory of the measuring process",
            "input_rss_gib": "GiB, peak resident memory before the timed call (inputs built)",
            "max_abs_diff_first_50": "max |score - numpy reference| over the first 50 lists",
            "excluded_returned": "watched courses returned in the first 50 lists (must be 0)",
        },
        chunk_size=args.chunk,
        torch_threads=next(iter(results.values()))["threads"],
        cpu_count=os.cpu_count(),
        load_average_at_end=list(os.getloadavg()),
        generator={"seed": 0, "queries": "N(0, 1/d)", "items": "N(0, 1)", "watched_draws": 20},
    )
    return rows


if __name__ == "__main__":
    main()
