"""The distillation teacher's memory at 10,000 and 100,000 courses: low-rank against dense EASE.

    python -m benchmarks.bench_teacher_memory                     # 10k and 100k courses
    python -m benchmarks.bench_teacher_memory --courses 2000 --learners 20000   # smoke

A synthetic watch matrix (learners x courses, `--watches` per learner on average, course
popularity Zipf-like with exponent 1, as course catalogues are) is fitted by
`baselines.low_rank_ease` (rank 256, what `conf/ncf/two_tower` uses) and, where it fits in
memory, by dense `baselines.ease_weights`. Each fit runs in its own child process, so its peak
resident memory (VmHWM) is its own; the matrix is built in the child before the peak is
reset. Reported: the teacher the two-tower holds on its device (the factors, or the dense
matrix), the fit's wall time, and the fit's peak memory above the matrix. Dense EASE is not
run where its Gram matrix alone (n_courses^2 float64) would exceed half of this machine's
memory; the row says so and gives that size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp

from benchmarks.common import print_table, write_result
from experiments.summary import peak_rss_gib, reset_peak_rss

RANK = 256
GIB = 2**30


def watch_matrix(n_learners: int, n_courses: int, watches: float, seed: int = 0) -> sp.csr_matrix:
    """(n_learners, n_courses) binary CSR, about `watches` distinct courses per learner."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_courses + 1)  # Zipf, exponent 1
    popularity /= popularity.sum()
    nnz = int(n_learners * watches)
    rows = rng.integers(0, n_learners, nnz)
    cols = rng.choice(n_courses, size=nnz, p=popularity)
    x = sp.csr_matrix((np.ones(nnz, np.float32), (rows, cols)), shape=(n_learners, n_courses))
    x.data[:] = 1.0  # repeated draws of a pair summed: one watch
    return x


def _child(form: str, n_learners: int, n_courses: int, watches: float) -> dict:
    from baselines import ease_weights, low_rank_ease

    x = watch_matrix(n_learners, n_courses, watches)
    reset_peak_rss()  # the peak from here on: the matrix and the interpreter, then the fit
    base = peak_rss_gib()
    start = time.perf_counter()
    if form == "low-rank":
        f = low_rank_ease(x, 200.0, rank=RANK)
        held = f.nbytes
    else:
        held = ease_weights(x, 200.0).nbytes
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "teacher_gib": held / GIB, "fit_peak_gib": peak_rss_gib() - base,
            "nnz": int(x.nnz)}  # fmt: skip


def measure(form: str, n_learners: int, n_courses: int, watches: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_teacher_memory", "--child", form,
           "--learners", str(n_learners), "--courses", str(n_courses), "--watches", str(watches)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--courses", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--learners", type=int, default=200_000)
    p.add_argument("--watches", type=float, default=30.0)
    p.add_argument("--child", choices=["low-rank", "dense"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.learners, args.courses[0], args.watches)))
        return
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    rows = []
    for n in args.courses:
        for form in ("low-rank", "dense"):
            gram_gib = n * n * 8 / GIB
            row = {"courses": n, "learners": args.learners, "teacher": form,
                   "rank": RANK if form == "low-rank" else None}  # fmt: skip
            if form == "dense" and gram_gib > memory_gib / 2:
                row |= {"teacher_gib": n * n * 4 / GIB, "fit_peak_gib": None, "seconds": None,
                        "note": f"not run: its Gram matrix alone is {gram_gib:.0f} GiB "
                                f"(machine: {memory_gib:.1f} GiB)"}  # fmt: skip
            else:
                row |= measure(form, args.learners, n, args.watches)
            rows.append(row)
    print_table(rows, "Distillation teacher: memory held and fit cost")
    write_result("teacher_memory", rows, units={"teacher_gib": "GiB", "fit_peak_gib": "GiB",
                 "seconds": "s"}, watches_per_learner=args.watches)  # fmt: skip


if __name__ == "__main__":
    main()
