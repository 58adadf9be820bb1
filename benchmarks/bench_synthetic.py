"""Synthetic platform: generation + validation + cleaning + temporal split, wall time and peak
memory, at several sizes (each in its own process, so peak memory is that size's own).

Peer, measured in the same process: reading the same three tables back from Parquet
(pyarrow), i.e. what loading a stored copy of the data would cost instead.

    python -m benchmarks.bench_synthetic                 # 10k (default size), 100k, 1M learners
    python -m benchmarks.bench_synthetic --sizes 10000   # one size
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import peak_rss_gib, print_table, run_child, write_result

# learners -> courses (the default platform has 1,000 courses; larger worlds get more)
COURSES = {10_000: 1_000, 100_000: 5_000, 300_000: 10_000, 1_000_000: 10_000}


def one_size(n_learners: int, n_courses: int) -> dict:
    from watchlog import DataReport, EventLog
    from watchlog.cleaning import clean
    from watchlog.splits import temporal_split
    from watchlog.synthetic import simulate_tables

    report = DataReport()
    t0 = time.perf_counter()
    events, learners, courses, _ = simulate_tables(n_learners, n_courses, seed=0)
    t1 = time.perf_counter()
    log = EventLog.from_tables(events, learners, courses, report=report)
    del events
    t2 = time.perf_counter()
    log = clean(log, report=report)
    t3 = time.perf_counter()
    split = temporal_split(log, valid_days=45, test_days=45, report=report)
    t4 = time.perf_counter()
    peak = peak_rss_gib()
    with tempfile.TemporaryDirectory() as tmp:
        log.save(Path(tmp) / "log")
        r0 = time.perf_counter()
        for name in ("events", "learners", "courses"):
            pd.read_parquet(Path(tmp) / "log" / f"{name}.parquet")
        read = time.perf_counter() - r0
    return {
        "learners": n_learners,
        "courses": n_courses,
        "events": len(log.events),
        "watched": int(log.events["watched"].sum()),
        "generate_s": t1 - t0,
        "validate_s": t2 - t1,
        "clean_s": t3 - t2,
        "split_s": t4 - t3,
        "total_s": t4 - t0,
        "peak_rss_gib": peak,
        "parquet_read_s (peer)": read,
        "total / parquet_read": (t4 - t0) / read,
        "us_per_event": (t4 - t0) / len(log.events) * 1e6,
        "test_label_events": len(split.test.labels),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, COURSES.get(args.one, 10_000))))
        return []
    rows = []
    for n in args.sizes:
        rows.append(run_child("benchmarks.bench_synthetic", "--one", str(n)))
        print(
            f"  {n:,} learners: {rows[-1]['total_s']:.1f} s, {rows[-1]['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
    print_table(rows, "Synthetic platform: generate + validate + clean + split")
    write_result(
        "synthetic",
        rows,
        units={
            "*_s": "seconds (wall)",
            "peak_rss_gib": "GiB, peak resident memory of the process",
            "us_per_event": "microseconds per event, total",
        },
        note="each size runs in its own process; peer = reading the same tables back from Parquet",
    )
    return rows


if __name__ == "__main__":
    main()
