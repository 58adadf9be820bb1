"""GLMix random-effect coordinate: the batched Newton solver vs a loop of scikit-learn fits;
and, with --fixed-effect, the fixed effect's CPU products by row blocks vs float64 copies.

    python -m benchmarks.bench_glmix_solver --full              # the whole loop (~6 min)
    python -m benchmarks.bench_glmix_solver                     # loop on 10,000 entities
    python -m benchmarks.bench_glmix_solver --small             # smoke test (~1 min)
    python -m benchmarks.bench_glmix_solver --fixed-effect      # block casts vs copies
    python -m benchmarks.bench_glmix_solver --fixed-effect --out /tmp/x  # results JSON there

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

--fixed-effect (results `glmix_fixed_effect.json`): `glmix.FixedEffect` (lbfgs, float64, l2 1,
tol 1e-4 as conf/glmix/default.yaml) on CPU, one torch thread, on a design shaped like GLMix's
"global" one (deterministic, seed 0): float32 CSR, 15 entries a row (intercept; one-hot
segment / language / industry of the learner, category / difficulty of the course; 3 of 600
skills on each side; one language x language cross of 400; 2 standard normal columns), 1,705
columns; true coefficients N(0, 0.5^2), intercept -1.5, labels Bernoulli, the watch-time-like
weights above. Two paths of the same code: (1) blocked, the CPU default (`_BlockCsr`: the
design's float32 CSR cast by row blocks into a scratch buffer for torch's CSR kernel, and
X^T r as the sum of the same blocks' transposed products by scipy, `_TransposedBlocks`: no
copy of X^T); (2) full, whole float64 torch copies of X and X^T (`_to_torch`, the CUDA path),
switched by patching `_BlockCsr.pair` for the benchmark alone (`full_copies`). Time: both in
one process, interleaved, `--rounds` rounds, medians; fit seconds (wall and CPU, X^T and the
copies included) and the CPU seconds of each matrix-vector product (X b and X^T r, timed
around each one in the fit). Memory: each path fits in its own process; its peak is the
resident high-water mark during the fit (reset after the data is generated), input included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator
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


# ---- the fixed effect: products by row blocks vs float64 copies ----------------------------
FE_ROWS = (1_000_000, 4_000_000)
FE_TOL = 1e-4  # conf/glmix/default.yaml's glmix.model.fixed.tol
# (columns, entries a row) of each one-hot / multi-hot group, in column order after the intercept
FE_GROUPS = {
    "learner.segment": (8, 1),
    "learner.language": (20, 1),
    "learner.industry": (30, 1),
    "learner.skills": (600, 3),
    "course.category": (40, 1),
    "course.difficulty": (4, 1),
    "course.skills": (600, 3),
    "learner.language*course.language": (400, 1),
}
FE_DENSE = 2  # standard normal columns, last


def make_fixed_problem(n_rows: int, seed: int = 0) -> dict[str, Any]:
    """X (n_rows, 1,705) float32 CSR, 15 entries a row (sorted columns), y, w (float64); see
    the module docstring."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    per_row = 1 + sum(k for _, k in FE_GROUPS.values()) + FE_DENSE
    cols = np.empty((n_rows, per_row), dtype=np.int32)
    vals = np.ones((n_rows, per_row), dtype=np.float32)
    cols[:, 0] = 0  # intercept
    j, base = 1, 1
    for card, k in FE_GROUPS.values():  # k draws from k disjoint ranges: distinct, sorted
        for i in range(k):
            lo, hi = card * i // k, card * (i + 1) // k
            # skewed towards each range's first values, as category frequencies are
            cols[:, j] = base + lo + ((hi - lo) * rng.random(n_rows) ** 2).astype(np.int32)
            j += 1
        base += card
    cols[:, j:] = base + np.arange(FE_DENSE, dtype=np.int32)
    vals[:, j:] = rng.standard_normal((n_rows, FE_DENSE), dtype=np.float32)
    p = base + FE_DENSE
    indptr = np.arange(0, n_rows * per_row + 1, per_row, dtype=np.int32)
    X = sp.csr_matrix((vals.reshape(-1), cols.reshape(-1), indptr), shape=(n_rows, p))
    del cols, vals
    beta = rng.normal(0.0, 0.5, p)
    beta[0] = -1.5
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-(X @ beta)))).astype(np.float64)
    w = np.ones(n_rows)
    clicks = y == 1
    w[clicks] = 1.0 + np.log1p(rng.exponential(1800.0, int(clicks.sum())) / 60.0)
    return {"X": X, "y": y, "w": w}


class _Timed:
    """X or X^T (`key` "x" or "xt") of a `_Problem`, each product counted and its CPU seconds
    added to `log`, in all and under its key."""

    def __init__(self, m: Any, log: dict[str, float], key: str):
        self.m, self.log, self.key = m, log, key

    def __matmul__(self, v):
        t = time.process_time()
        out = self.m @ v
        t = time.process_time() - t
        for k in ("", f"{self.key}_"):
            self.log[f"{k}seconds"] = self.log.get(f"{k}seconds", 0.0) + t
            self.log[f"{k}products"] = self.log.get(f"{k}products", 0) + 1
        return out


@contextlib.contextmanager
def full_copies() -> Iterator[None]:
    """`_Problem` on the CPU with whole float64 torch copies of X and X^T (`_to_torch`, the
    CUDA path) instead of `_BlockCsr`'s casts by row blocks."""
    import glmix.fixed_effect as fe

    keep = fe._BlockCsr.__dict__["pair"]
    fe._BlockCsr.pair = lambda m, dt: (
        fe._to_torch(m, "cpu", dt),
        fe._to_torch(m.T.tocsr(), "cpu", dt),
    )
    try:
        yield
    finally:
        fe._BlockCsr.pair = keep


@contextlib.contextmanager
def timed_products(log: dict[str, float]) -> Iterator[None]:
    """Every `_Problem` made inside counts and times its products into `log`."""
    import glmix.fixed_effect as fe

    keep = fe._Problem.__init__

    def init(self, *args, **kwargs):
        keep(self, *args, **kwargs)
        self.X, self.XT = _Timed(self.X, log, "x"), _Timed(self.XT, log, "xt")

    fe._Problem.__init__ = init
    try:
        yield
    finally:
        fe._Problem.__init__ = keep


def fit_fixed(data: dict[str, Any], path: str) -> dict[str, Any]:
    """One FixedEffect fit on the CPU by `path` ("blocked" or "full"): seconds, products,
    coefficients."""
    from glmix import FixedEffect

    log: dict[str, float] = {}
    fe = FixedEffect(l2=1.0, tol=FE_TOL, device="cpu")
    with full_copies() if path == "full" else contextlib.nullcontext(), timed_products(log):
        wall, cpu = time.perf_counter(), time.process_time()
        fe.fit(data["X"], data["y"], sample_weight=data["w"])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    st = fe.fit_stats_
    return {
        "fit_s": wall,
        "fit_cpu_s": cpu,
        "evaluations": st["function_evaluations"],
        "iterations": st["iterations"],
        "converged": st["converged"],
        "products": log.get("products", 0),
        **{
            f"{k}product_s": log.get(f"{k}seconds", 0.0) / max(log.get(f"{k}products", 0), 1)
            for k in ("", "x_", "xt_")
        },
        "coef": fe.coef_,
    }


FE_PATHS = ("blocked", "full")


def run_fixed_time(n_rows: int, rounds: int) -> dict[str, Any]:
    """Both paths in this process, interleaved, `rounds` rounds: medians, max |coef diff|."""
    import torch

    data = make_fixed_problem(n_rows)
    got: dict[str, list[dict[str, Any]]] = {k: [] for k in FE_PATHS}
    for _ in range(rounds):
        for path in FE_PATHS:
            got[path].append(fit_fixed(data, path))
    med = {
        path: {
            k: float(np.median([r[k] for r in runs]))
            for k in ("fit_s", "fit_cpu_s", "product_s", "x_product_s", "xt_product_s")
        }
        for path, runs in got.items()
    }
    b, f = got["blocked"][-1], got["full"][-1]
    same_runs = all(r["evaluations"] == b["evaluations"] for rs in got.values() for r in rs)
    return {
        "rows": n_rows,
        "entries": int(data["X"].nnz),
        "features": int(data["X"].shape[1]),
        "torch_threads": torch.get_num_threads(),
        "rounds": rounds,
        "iterations": b["iterations"],
        "evaluations": b["evaluations"],
        "products": b["products"],
        "converged": b["converged"],
        "same_evaluations_every_fit": same_runs,
        "blocked_fit_s": med["blocked"]["fit_s"],
        "full_fit_s": med["full"]["fit_s"],
        "blocked_fit_cpu_s": med["blocked"]["fit_cpu_s"],
        "full_fit_cpu_s": med["full"]["fit_cpu_s"],
        "fit_cpu_ratio_blocked_over_full": med["blocked"]["fit_cpu_s"] / med["full"]["fit_cpu_s"],
        "blocked_product_s": med["blocked"]["product_s"],
        "full_product_s": med["full"]["product_s"],
        "product_ratio_blocked_over_full": med["blocked"]["product_s"] / med["full"]["product_s"],
        **{
            f"{path}_{k}": med[path][k]
            for path in FE_PATHS
            for k in ("x_product_s", "xt_product_s")
        },
        "max_abs_coef_diff": float(np.abs(b["coef"] - f["coef"]).max()),
    }


def run_fixed_memory(n_rows: int, path: str) -> dict[str, Any]:
    """One fit by `path` in this process: the resident peak during the fit, input included."""
    from experiments.summary import reset_peak_rss

    data = make_fixed_problem(n_rows)
    input_gib = (
        sum(a.nbytes for a in (data["X"].data, data["X"].indices, data["X"].indptr))
        + data["y"].nbytes
        + data["w"].nbytes
    ) / 2**30
    per_fit = reset_peak_rss()  # the generation's temporaries are not the fit's
    res = fit_fixed(data, path)
    return {
        "path": path,
        "input_gib": input_gib,
        "peak_gib": peak_rss_gib(),
        "peak_reset_before_fit": per_fit,
        "fit_s": res["fit_s"],
    }


def fixed_effect_main(args, common: list[str]) -> None:
    rows = []
    for n in FE_ROWS:
        n //= 20 if args.small else 1
        print(f"  fixed effect, {n:,} rows: time ({args.rounds} rounds) ...", flush=True)
        row = _child(["--fe-time", str(n), "--rounds", str(args.rounds), *common])
        mem = {}
        for path in FE_PATHS:
            print(f"  fixed effect, {n:,} rows: memory, {path} ...", flush=True)
            mem[path] = _child(["--fe-memory", str(n), path, *common])
        row["input_gib"] = mem["blocked"]["input_gib"]
        row.update({f"{path}_peak_gib": m["peak_gib"] for path, m in mem.items()})
        row["peak_reset_before_fit"] = all(m["peak_reset_before_fit"] for m in mem.values())
        rows.append(row)
    print_table(rows, "GLMix fixed effect on CPU: products by row blocks vs float64 copies")
    name = "glmix_fixed_effect" + ("_small" if args.small else "")
    path = write_result(
        name,
        rows,
        folder=args.out,
        units={
            "*_fit_s": "seconds (wall), median over rounds: the whole FixedEffect.fit",
            "*_fit_cpu_s": "CPU seconds, median over rounds: the whole FixedEffect.fit",
            "*_product_s": "CPU seconds per matrix-vector product (X b or X^T r) in the fit, median",
            "*_x_product_s, *_xt_product_s": "the same, X b alone and X^T r alone",
            "*_ratio_blocked_over_full": "blocked / full, of the medians",
            "*_peak_gib": "GiB: resident high-water mark during one fit in its own process "
            "(reset after generating the data), input included",
            "input_gib": "GiB: the design's CSR arrays, labels and weights",
            "max_abs_coef_diff": "max |blocked - full| of the fitted coefficients (last round)",
        },
        note=(
            "blocked: the CPU default (glmix.fixed_effect._BlockCsr: the design's float32 CSR "
            "cast by row blocks; X^T r summed over the same blocks, _TransposedBlocks); full: "
            "float64 torch copies of X and X^T (_to_torch, the CUDA path). lbfgs, float64, l2 1, "
            "tol 1e-4; one row per size"
        ),
        loadavg=os.getloadavg(),
    )
    print(f"wrote {path}", flush=True)


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
    ap.add_argument(
        "--fixed-effect", action="store_true", help="the fixed effect's block casts vs copies"
    )
    ap.add_argument("--rounds", type=int, default=3, help="--fixed-effect: timing rounds")
    ap.add_argument("--out", help="folder of the results JSON (default benchmarks/results)")
    ap.add_argument("--one", type=int, nargs=2, help=argparse.SUPPRESS)  # internal: main size
    ap.add_argument("--size", type=int, nargs=2, help=argparse.SUPPRESS)  # internal: one size
    ap.add_argument("--fe-time", type=int, help=argparse.SUPPRESS)  # internal: rows
    ap.add_argument("--fe-memory", nargs=2, help=argparse.SUPPRESS)  # internal: rows, path
    args = ap.parse_args(argv)
    if args.fixed_effect or args.fe_time or args.fe_memory:
        args.threads = args.threads or 1  # the fixed effect's comparison: one torch thread
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
    if args.fe_time:
        print(json.dumps(run_fixed_time(args.fe_time, args.rounds)))
        return
    if args.fe_memory:
        print(json.dumps(run_fixed_memory(int(args.fe_memory[0]), args.fe_memory[1])))
        return
    div = 20 if args.small else 1
    common = (["--threads", str(args.threads)] if args.threads else []) + (
        ["--no-float64"] if args.no_float64 else []
    )
    if args.fixed_effect:
        fixed_effect_main(args, common)
        return
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
    path = write_result(
        "glmix_solver" + ("_small" if args.small else ""),
        [head, *rows],
        folder=args.out,
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
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
