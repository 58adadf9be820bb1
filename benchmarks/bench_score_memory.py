"""Memory of `NCFRecommender.score` and `score_stats` at 4,096 learners x 50,000 courses:
scores in blocks of at most `SCORE_BLOCK` (2**24) against one block per chunk of learners.

    python -m benchmarks.bench_score_memory

A random two-tower (bag_dim 64, mlp [64, 64], course bias) over 4,096 learners with 20
watched courses each and 50,000 courses with 10 co-watch neighbours each. Each measurement
runs in its own process; the course vectors are computed and both calls warmed up on two
learners before the peak (VmHWM) is reset, so the figure is the call's own memory above what
the process held. Peer, in the same run: the same code with `SCORE_BLOCK` raised so that a
whole chunk of 4,096 learners is one block (what both calls did before they were blocked).
The outputs of the two are compared (largest absolute difference).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from benchmarks.common import print_table, run_child, write_result
from experiments.summary import peak_rss_gib, reset_peak_rss

N_LEARNERS, N_COURSES = 4096, 50_000
WAYS = {"blocked (SCORE_BLOCK 2^24)": None, "one block per chunk (peer)": 2**40}


def random_rows(rng: np.random.Generator, n: int, per_row: int) -> sp.csr_matrix:
    """(n, N_COURSES) CSR, `per_row` random courses a row, each 1 / per_row."""
    cols = rng.integers(0, N_COURSES, size=n * per_row)
    rows = np.repeat(np.arange(n), per_row)
    m = sp.csr_matrix(
        (np.full(cols.size, 1.0 / per_row, np.float32), (rows, cols)), shape=(n, N_COURSES)
    )
    m.sum_duplicates()
    return m


def _measure(call: str, score_block: int | None) -> dict[str, Any]:
    import ncf.recommender as recommender
    from ncf.inputs import Snapshot
    from ncf.model import TwoTower
    from watchlog.idmap import IdMap

    if score_block is not None:
        recommender.SCORE_BLOCK = score_block
    rng = np.random.default_rng(1)
    hist, bags = random_rows(rng, N_LEARNERS, 20), random_rows(rng, N_COURSES, 10)
    torch.manual_seed(0)
    model = TwoTower(N_LEARNERS, N_COURSES, bag_dim=64, mlp=[64, 64], course_bias=True)
    rec = recommender.NCFRecommender(
        model, Snapshot("s", history=hist, seen=hist, course_bags=bags),
        IdMap(np.arange(N_LEARNERS)), IdMap(np.arange(N_COURSES)), device="cpu",
    )  # fmt: skip
    learners = np.arange(N_LEARNERS)
    courses = np.random.default_rng(0).integers(0, N_COURSES, size=N_LEARNERS)
    rec.score(learners[:2], courses[:2])  # warm-up: course vectors, items, allocator
    rec.score_stats(learners[:2])
    reset_peak_rss()  # VmHWM from here (where /proc lacks it: the lifetime peak)
    base = peak_rss_gib()
    start = time.perf_counter()
    if call == "score":
        out = rec.score(learners, courses)
    else:
        out = rec.score_stats(learners)[["ncf_mean", "ncf_std", "ncf_logsumexp"]].to_numpy()
    seconds = time.perf_counter() - start
    return {"above_gib": peak_rss_gib() - base, "before_gib": base, "seconds": seconds,
            "out": np.asarray(out, np.float64).ravel().tolist()}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement
    a = ap.parse_args(argv)
    if a.worker:
        task = json.loads(a.worker)
        print(json.dumps(_measure(task["call"], task["score_block"])))
        return []
    rows = []
    for call in ("score", "score_stats"):
        res = {
            way: run_child("benchmarks.bench_score_memory", "--worker",
                           json.dumps({"call": call, "score_block": block}))
            for way, block in WAYS.items()
        }  # fmt: skip
        outs = [np.asarray(r.pop("out")) for r in res.values()]
        diff = float(np.abs(outs[0] - outs[1]).max())
        for way, r in res.items():
            rows.append({"call": call, "way": way, "learners": N_LEARNERS, "courses": N_COURSES,
                         "above_gib": round(r["above_gib"], 3), "seconds": round(r["seconds"], 2),
                         "max_abs_diff_vs_peer": diff})  # fmt: skip
    print_table(rows, "NCFRecommender.score / score_stats memory")
    print(f"wrote {write_result('score_memory', rows, {'above_gib': 'GiB', 'seconds': 's'})}")
    return rows


if __name__ == "__main__":
    main()
