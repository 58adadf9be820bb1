"""GLMix random-effect coordinate: the batched Newton solver vs a loop of scikit-learn fits.

    python -m benchmarks.bench_glmix_solver --full              # the whole loop (~6 min)
    python -m benchmarks.bench_glmix_solver                     # loop on 10,000 entities
    python -m benchmarks.bench_glmix_solver --small             # smoke test (~1 min)

Data (deterministic, seed 0): n_entities with heavy-tailed rows per entity (lognormal,
sigma 1.5: median ~ mean / 3, largest ~ 400 x mean), 16 standard normal float32 features,
true per-entity coefficients N(0, 0.5^2) and intercepts N(-1, 0.5^2), labels Bernoulli,
watch-time-like weights (1 for non-clicks, 1 + log1p(Exp(mean 30 min) / 60 s) for clicks),
offsets 0. Problem per entity: sum w logloss + 1/2 l2 (|slopes|^2 + intercept^2), l2 = 1.

(a) batched: `glmix.RandomEffect(l2=1, dtype=float32).fit(X, entity, y, w)` on the dense
    (n_rows, 16) design: id map, grouping, bucketing, Newton, all included; then float64.
(b) loop: per entity, sklearn `LogisticRegression(C=1/l2, fit_intercept=False)`
    (lbfgs, tol 1e-8) on [X_e | 1] with the same weights, so the intercept is penalized like the
    slopes, OMP/BLAS threads = 1 (threadpoolctl). Entities with one class are skipped (sklearn
    refuses them; the batched solver solves them): this flatters the loop. `--full` loops
    over every entity; otherwise a seeded random subset of `--loop-entities` and the total is
    extrapolated as time x n_entities / n_looped (entities drawn uniformly: unbiased).
Agreement: max |coefficient difference| between each batched run and the loop on the
looped entities. Then the batched solver alone at more sizes (20 rows per entity up to
1,000,000 entities / 20,000,000 rows), each size in its own process so that its peak
resident memory (VmHWM, input data included) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from benchmarks.common import peak_rss_gib, print_table, run_child, write_result

N_FEATURES = 16
L2 = 1.0
SK_TOL = 1e-8
MAIN = (100_000, 5_000_000)
SCALING = [
    (50_000, 1_000_000),
    (250_000, 5_000_000),
    (500_000, 10_000_000),
    (1_000_000, 20_000_000),
]


def make_problem(n_entities: int, n_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Entity ids (rows shuffled), X (n, 16) float32, y, w; see the module docstring."""
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(0.0, 1.5, n_entities)
    counts = np.maximum(1, np.floor(raw / raw.sum() * n_rows)).astype(np.int64)
    entity = rng.permutation(np.repeat(np.arange(n_entities, dtype=np.int64), counts))
    n = len(entity)
    X = rng.standard_normal((n, N_FEATURES), dtype=np.float32)
    coef = rng.normal(0.0, 0.5, (n_entities, N_FEATURES)).astype(np.float32)
    bias = rng.normal(-1.0, 0.5, n_entities).astype(np.float32)
    y = np.empty(n, dtype=np.float32)
    for lo in range(0, n, 1 << 21):  # chunks: coef[entity] is (chunk, 16)
        e = entity[lo : lo + (1 << 21)]
        z = np.einsum("ij,ij->i", X[lo : lo + len(e)], coef[e]) + bias[e]
        y[lo : lo + len(e)] = rng.random(len(e)) < 1.0 / (1.0 + np.exp(-z))
    w = np.ones(n, dtype=np.float32)
    clicks = y == 1
    w[clicks] = 1.0 + np.log1p(rng.exponential(1800.0, int(clicks.sum())) / 60.0)
    return {"entity": entity, "X": X, "y": y, "w": w, "counts": counts}


def batched(data: dict[str, np.ndarray], dtype: str) -> tuple[Any, float]:
    from glmix import RandomEffect

    t0 = time.perf_counter()
    re = RandomEffect(key="entity", l2=L2, dtype=dtype)
    re.fit(data["X"], data["entity"], data["y"], data["w"])
    return re, time.perf_counter() - t0


def sklearn_loop(data: dict[str, np.ndarray], entities: np.ndarray) -> dict[str, Any]:
    """Fit `entities` one by one; returns time, coefficients (intercept last) and skips."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    ent, X, y, w = data["entity"], data["X"], data["y"], data["w"]
    order = np.argsort(ent, kind="stable")  # grouping, as any loop needs (not timed)
    start = np.concatenate(([0], np.cumsum(data["counts"])))
    coefs = np.full((len(entities), N_FEATURES + 1), np.nan)
    skipped = 0
    with threadpool_limits(1):
        t0 = time.perf_counter()
        for i, e in enumerate(entities):
            rows = order[start[e] : start[e + 1]]
            ye = y[rows]
            if ye.min() == ye.max():
                skipped += 1
                continue
            Xe = np.c_[X[rows].astype(np.float64), np.ones(len(rows))]
            m = LogisticRegression(C=1.0 / L2, fit_intercept=False, tol=SK_TOL, max_iter=1000)
            coefs[i] = m.fit(Xe, ye, sample_weight=w[rows]).coef_.ravel()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "coef": coefs, "skipped": skipped}


def run_main(args) -> dict[str, Any]:
    """(a) and (b) at the main size, in this process."""
    import torch

    n_ent, n_rows = args.one
    t0 = time.perf_counter()
    data = make_problem(n_ent, n_rows)
    gen_s = time.perf_counter() - t0
    input_gib = sum(a.nbytes for a in data.values()) / 2**30
    re32, t32 = batched(data, "float32")
    peak32 = peak_rss_gib()
    re64, t64 = batched(data, "float64") if not args.no_float64 else (None, float("nan"))
    rng = np.random.default_rng(1)
    looped = (
        np.arange(n_ent)
        if args.full
        else np.sort(rng.choice(n_ent, args.loop_entities, replace=False))
    )
    loop = sklearn_loop(data, looped)
    est = loop["seconds"] * n_ent / len(looped)
    ok = ~np.isnan(loop["coef"][:, 0])
    rows32 = re32.ids_.to_index(looped[ok])
    diff32 = float(np.abs(re32.coef_[rows32] - loop["coef"][ok]).max())
    diff64 = float("nan")
    if re64 is not None:
        diff64 = float(np.abs(re64.coef_[re64.ids_.to_index(looped[ok])] - loop["coef"][ok]).max())
    st = re32.fit_stats_
    return {
        "entities": n_ent,
        "rows": int(len(data["y"])),
        "max_rows_per_entity": int(data["counts"].max()),
        "torch_threads": torch.get_num_threads(),
        "generate_s": gen_s,
        "input_gib": input_gib,
        "batched_f32_s": t32,
        "batched_f32_solve_s": st["seconds"],
        "batched_f32_peak_gib": peak32,
        "newton_iterations_mean": st["newton_iterations_mean"],
        "converged": st["converged"],
        "single_class_entities": st["single_class"],
        "batched_f64_s": t64,
        "loop_mode": "full" if args.full else f"sample of {len(looped):,}, extrapolated",
        "loop_entities_fitted": int(ok.sum()),
        "loop_entities_skipped_one_class": loop["skipped"],
        "loop_measured_s": loop["seconds"],
        "loop_s (all entities)": est,
        "speedup_f32": est / t32,
        "speedup_f64": est / t64,
        "max_abs_coef_diff_f32": diff32,
        "max_abs_coef_diff_f64": diff64,
    }


def run_size(n_ent: int, n_rows: int) -> dict[str, Any]:
    """The batched float32 fit alone at one size (own process: own peak memory)."""
    import torch

    data = make_problem(n_ent, n_rows)
    input_gib = sum(a.nbytes for a in data.values()) / 2**30
    re, t = batched(data, "float32")
    st = re.fit_stats_
    return {
        "entities": n_ent,
        "rows": int(len(data["y"])),
        "torch_threads": torch.get_num_threads(),
        "fit_s": t,
        "prepare_s": t - st["seconds"],
        "solve_s": st["seconds"],
        "us_per_row": t / len(data["y"]) * 1e6,
        "newton_iterations_mean": st["newton_iterations_mean"],
        "chunks": st["chunks"],
        "converged": st["converged"],
        "input_gib": input_gib,
        "peak_gib": peak_rss_gib(),
    }


def _child(argv: list[str]) -> dict[str, Any]:
    return run_child("benchmarks.bench_glmix_solver", *argv)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--full", action="store_true", help="loop over every entity (~6 min)")
    ap.add_argument("--loop-entities", type=int, default=10_000)
    ap.add_argument("--small", action="store_true", help="1/20 of every size (smoke test)")
    ap.add_argument("--no-float64", action="store_true", help="skip the float64 batched run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--one", type=int, nargs=2, help=argparse.SUPPRESS)  # internal: main size
    ap.add_argument("--size", type=int, nargs=2, help=argparse.SUPPRESS)  # internal: one size
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.one:
        print(json.dumps(run_main(args)))
        return
    if args.size:
        print(json.dumps(run_size(*args.size)))
        return
    div = 20 if args.small else 1
    common = (["--threads", str(args.threads)] if args.threads else []) + (
        ["--no-float64"] if args.no_float64 else []
    )
    main_size = (MAIN[0] // div, MAIN[1] // div)
    loop = (
        ["--full"] if args.full else ["--loop-entities", str(min(args.loop_entities, main_size[0]))]
    )
    print(f"main size {main_size[0]:,} entities / {main_size[1]:,} rows ...", flush=True)
    head = _child(["--one", *map(str, main_size), *loop, *common])
    print_table([head], "Batched solver vs scikit-learn loop")
    rows = []
    for n_ent, n_rows in SCALING:
        n_ent, n_rows = n_ent // div, n_rows // div
        print(f"  {n_ent:,} entities / {n_rows:,} rows ...", flush=True)
        rows.append(_child(["--size", str(n_ent), str(n_rows), *common]))
    print_table(rows, "Batched solver alone vs size (20 rows per entity)")
    write_result(
        "glmix_solver" + ("_small" if args.small else ""),
        [head, *rows],
        units={
            "*_s": "seconds (wall)",
            "*_gib": "GiB; peak = resident high-water mark of the process, input included",
            "us_per_row": "microseconds per row, whole fit",
            "max_abs_coef_diff_*": "max |batched - sklearn| over the looped entities' coefficients",
        },
        note=(
            "row 0: main size, batched (float32, float64) vs sklearn loop (threads 1); "
            "rows 1..: batched float32 alone, each size in its own process"
        ),
        loadavg=os.getloadavg(),
    )


if __name__ == "__main__":
    main()
