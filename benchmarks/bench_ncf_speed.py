"""Two-tower training speed against a plain PyTorch NeuMF loop, and recommend() end to end.

    python -m benchmarks.bench_ncf_speed                 # both parts
    python -m benchmarks.bench_ncf_speed --part train --epochs 5

Training (same data, same batch size, same run, the same --threads for both): the MovieLens-100K training
part of the stratified split (the pairs the two-tower trains on). The two-tower runs through
the real code path (`experiments.train_ncf.fit`: Lightning, denoising, full softmax), timed by
`PhaseTimer` over training batches only (validation excluded). NeuMF (benchmarks/neumf_peer)
is He et al.'s model with 4 uniform negatives per positive. Units differ by design, so both
are given: a two-tower step takes B learners (each with ~half of its courses as positives,
the other half as input); a NeuMF step takes B (learner, course) samples (1 positive : 4
negatives). "positives/s" counts the observed pairs used as positives per second: the
training signal both consume. An epoch is every learner once (two-tower) or every positive
once with its negatives (NeuMF).

recommend(): `NCFRecommender.recommend` for every one of 1,000,000 learners (about 20 watched
courses each) over 10,000 courses, top 100, already-watched courses excluded: learner tower
(EmbeddingBag + MLP) + chunked matmul + top-k + id mapping, in its own process for peak memory.
Peer: the plain torch matmul of the same shape ((1M x 64) @ (64 x 10k), same chunks, no top-k)
in the same process; GFLOP/s = 2 n m d / seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_ncf_movielens import compose_cfg
from benchmarks.common import peak_rss_gib, print_table, run_child, write_result
from benchmarks.neumf_peer import train_neumf
from experiments.train_ncf import fit


def training_rows(epochs: int, batch_sizes: list[int], out: Path, threads: int) -> list[dict]:
    rows = []
    for b in batch_sizes:
        cfg = compose_cfg(
            out / f"tt_{b}", "experiment=ml100k_stratified", f"ncf.datamodule.batch_size={b}",
            f"trainer.max_epochs={epochs}", "ncf.patience=1000", "ncf.refit=false",
            f"threads={threads}",
        )  # fmt: skip
        trained = fit(cfg)
        t = trained.result.timings
        x_train = trained.datamodule.valid.history  # the training pairs (validation fold inputs)
        torch.set_num_threads(threads)
        peer = train_neumf(x_train, epochs=epochs, batch_size=b, seed=0, device="cpu")
        peer_pos_s = peer["samples_per_s"] / 5  # 1 positive + 4 negatives per positive
        rows += [
            {"model": "two-tower (ours)", "batch": b, "seconds_per_epoch": t["seconds_per_epoch"],
             "positives_per_s": t["train_positives_per_s"], "learners_per_s": t["train_learners_per_s"],
             "samples_per_s": t["train_positives_per_s"]},
            {"model": "NeuMF, plain PyTorch", "batch": b, "seconds_per_epoch": peer["seconds_per_epoch"],
             "positives_per_s": peer_pos_s, "learners_per_s": float("nan"),
             "samples_per_s": peer["samples_per_s"]},
            {"model": "ratio ours / NeuMF", "batch": b,
             "seconds_per_epoch": t["seconds_per_epoch"] / peer["seconds_per_epoch"],
             "positives_per_s": t["train_positives_per_s"] / peer_pos_s,
             "learners_per_s": float("nan"), "samples_per_s": float("nan")},
        ]  # fmt: skip
    return rows


def recommend_child(
    n_learners: int, n_courses: int, top: int, chunk: int, threads: int = 2
) -> dict:
    """Runs in its own process: build a random model + snapshot, time recommend() and the peer."""
    from benchmarks.bench_retrieval import random_recommender

    torch.set_num_threads(threads)
    rec = random_recommender(n_learners, n_courses, chunk)
    base = peak_rss_gib()
    learners = np.arange(n_learners)
    start = time.perf_counter()
    ids, scores = rec.recommend(learners, N=top)
    rec_s = time.perf_counter() - start
    assert ids.shape == (n_learners, top) and np.isfinite(scores[:, 0]).all()
    # Peer: the same matmul, same chunks, nothing else.
    q = rec.learner_embeddings_at(learners[:chunk])  # one chunk of queries, reused
    c = rec.course_embeddings()
    d = int(c.shape[1])
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(0, n_learners, chunk):
            s = q @ c.T  # (chunk, n_courses)
            del s
    peer_s = time.perf_counter() - start
    start = time.perf_counter()
    rec.learner_embeddings_at(learners)
    tower_s = time.perf_counter() - start
    flops = 2.0 * n_learners * n_courses * d
    return {
        "learners": n_learners, "courses": n_courses, "top": top, "d": d,
        "recommend_s": rec_s, "learner_tower_s": tower_s, "matmul_peer_s": peer_s,
        "recommend_gflops": flops / rec_s / 1e9, "peer_gflops": flops / peer_s / 1e9,
        "ratio_recommend_to_peer": rec_s / peer_s, "peak_rss_gib": peak_rss_gib(),
        "rss_before_gib": base,
    }  # fmt: skip


def recommend_rows(
    sizes: list[int], n_courses: int, top: int, chunk: int, threads: int
) -> list[dict]:
    rows = []
    for n in sizes:  # each size in a fresh interpreter: its own peak memory
        task = json.dumps([n, n_courses, top, chunk, threads])
        rows.append(run_child("benchmarks.bench_ncf_speed", "--worker", task))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("train", "recommend", "both"), default="both")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2, help="torch threads, the same for both")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one recommend() size
    p.add_argument("--out", default="/tmp/bench_ncf_speed")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(recommend_child(*json.loads(args.worker))))
        return
    units = {"seconds_per_epoch": "s", "positives_per_s": "1/s", "recommend_s": "s",
             "peak_rss_gib": "GiB", "recommend_gflops": "GFLOP/s"}  # fmt: skip
    # One results file per part, so running one part never erases the other's figures.
    if args.part in ("train", "both"):
        rows = training_rows(args.epochs, args.batch_sizes, Path(args.out), args.threads)
        print_table(
            rows, f"Training on MovieLens-100K ({args.threads} threads): two-tower vs NeuMF"
        )
        write_result("ncf_speed_training", rows, units, epochs=args.epochs, threads=args.threads)
    if args.part in ("recommend", "both"):
        rows = recommend_rows(args.sizes, 10_000, 100, args.chunk, args.threads)
        print_table(rows, "recommend(): all learners x 10,000 courses, top 100")
        write_result("ncf_speed_recommend", rows, units, threads=args.threads)


if __name__ == "__main__":
    main()
