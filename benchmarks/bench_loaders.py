"""MovieLens-20M-sized load: a ratings.csv of 20,000,263 rows in the ML-20M format (synthetic
values; the real file is not in the data root) through `load_movielens_csv` (read, ratings to
events, validation, id maps). Peer in the same process: pandas' pyarrow CSV read of the same
file, with no conversion or validation. Each size runs in its own process.

    python -m benchmarks.bench_loaders                  # 1M, 5M, 20,000,263 ratings
    python -m benchmarks.bench_loaders --sizes 1000000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import peak_rss_gib, print_table, run_child, write_result

N_USERS, N_MOVIES = 138_493, 27_278  # ML-20M's


def write_ml20m_like(folder: Path, n_ratings: int, seed: int = 0) -> None:
    """ratings.csv (userId, movieId, rating, timestamp) and movies.csv with ML-20M's shapes."""
    rng = np.random.default_rng(seed)
    movie_ids = np.sort(rng.choice(131_262, N_MOVIES, replace=False) + 1)
    pop = 1.0 / (np.arange(N_MOVIES) + 10.0)
    draws = int(n_ratings * 1.2)  # oversample, then keep exactly n distinct (user, movie) pairs
    users = rng.integers(1, N_USERS + 1, draws)
    movies = movie_ids[rng.choice(N_MOVIES, draws, p=pop / pop.sum())]
    pairs = np.unique(users.astype(np.int64) << 32 | movies)
    if len(pairs) < n_ratings:
        raise RuntimeError(f"only {len(pairs):,} distinct pairs for {n_ratings:,} ratings")
    pairs = np.sort(rng.choice(pairs, n_ratings, replace=False))
    ratings = pd.DataFrame(
        {
            "userId": (pairs >> 32).astype(np.int32),
            "movieId": (pairs & 0xFFFFFFFF).astype(np.int32),
            "rating": rng.integers(1, 11, len(pairs)) / 2.0,
            "timestamp": rng.integers(824_000_000, 1_428_000_000, len(pairs)),
        }
    )
    ratings.to_csv(folder / "ratings.csv", index=False)
    pd.DataFrame(
        {
            "movieId": movie_ids,
            "title": [f"Movie {i} (1995)" for i in movie_ids],
            "genres": "Drama|Comedy",
        }
    ).to_csv(folder / "movies.csv", index=False)


def one_size(n_ratings: int) -> dict:
    from watchlog.loaders import load_movielens_csv

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_ml20m_like(folder, n_ratings)
        size_mb = (folder / "ratings.csv").stat().st_size / 1e6
        t0 = time.perf_counter()
        raw = pd.read_csv(folder / "ratings.csv", engine="pyarrow")
        peer = time.perf_counter() - t0
        rows = len(raw)
        del raw
        t0 = time.perf_counter()
        log = load_movielens_csv(folder)
        ours = time.perf_counter() - t0
    return {
        "ratings": rows,
        "file_mb": size_mb,
        "learners": log.n_learners,
        "courses": log.n_courses,
        "load_s": ours,
        "peak_rss_gib": peak_rss_gib(),
        "pandas_pyarrow_read_s (peer)": peer,
        "load / read": ours / peer,
        "us_per_rating": ours / rows * 1e6,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_263])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one size, JSON out
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one)))
        return []
    rows = []
    for n in args.sizes:
        rows.append(run_child("benchmarks.bench_loaders", "--one", str(n)))
        print(
            f"  {n:,} ratings: {rows[-1]['load_s']:.1f} s, {rows[-1]['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
    print_table(rows, "MovieLens CSV load (ML-20M format): read + events + validation + id maps")
    write_result(
        "loaders",
        rows,
        units={
            "*_s": "seconds (wall)",
            "peak_rss_gib": "GiB, process peak (VmHWM)",
            "file_mb": "MB",
        },
        note="synthetic values in the ML-20M format (138,493 users, 27,278 movies, one rating per pair)",
    )
    return rows


if __name__ == "__main__":
    main()
