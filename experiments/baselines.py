"""Baselines on any data: `python -m experiments.baselines data=... split=... [ncf=...]`.

data stage -> the two-tower's validation and test inputs (`windows`: its `ncf.inputs` at
each cutoff) -> popularity, item-kNN (k), EASE (L2) chosen on validation NDCG@10 and tested
once (`baselines.baseline_rows`); MF (`mf`, a conf/ncf option) and the two-tower (`ncf`)
trained by `experiments.train_ncf.fit` on the same prepared data, their epoch chosen on the
same validation -> baselines.json, baselines.md, data_report.json, run manifest.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from baselines import EASE, Window, baseline_rows, default_candidates
from experiments.data import PreparedData, prepare_data
from experiments.provenance import code_version, write_manifest, write_resolved_config
from experiments.run_log import log_into_run_folder
from experiments.schemas import check_config
from experiments.tables import log_table, markdown_table
from watchlog.io import write_json, write_text

__all__ = ["METRICS", "candidates", "run", "table_rows", "windows"]

_log = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@10", "precision@10", "map@10")
_ROW_KEYS = ("model", "parameter", "chosen", "valid_ndcg@10", *METRICS, "seconds")


def windows(cfg: DictConfig, data: PreparedData) -> dict[str, Window]:
    """The validation and test windows with the two-tower's inputs: its `InputBuilder`'s
    snapshot at each fold (temporal: the lookback window's watches before the cutoff; other
    splits: the fold's input pairs), its labels, and every course watched before as excluded."""
    if data.split.valid is None:
        raise ValueError(
            f"split: the baselines choose their parameters on a validation fold, and this "
            f"{data.split.kind} split has none; give it one (split.fn.valid_days for temporal, "
            "split.fn.valid_ratio for random / stratified, split.fn.n_valid for leave_latest)"
        )
    builder = instantiate(cfg.ncf.inputs, _convert_="all")
    out = {}
    for name, fold in (("valid", data.split.valid), ("test", data.split.test)):
        snap = builder.snapshot(data.log, fold)
        inputs = (snap.history > 0).astype(np.float32).tocsr()  # weights -> watched or not
        out[name] = Window(inputs, snap.labels, exclude=snap.seen)
    return out


def candidates(cfg: DictConfig) -> list:
    """`baselines.default_candidates` with the grids and EASE settings of `cfg.baselines`."""
    b = cfg.baselines
    ease = EASE(
        rank=b.ease.rank, max_dense_gib=b.ease.max_dense_gib,
        fallback_rank=b.ease.fallback_rank, seed=cfg.seed,
    )  # fmt: skip
    return default_candidates(ease_l2=list(b.ease.l2), knn_k=list(b.item_knn.k), ease=ease)


def _trained_row(cfg: DictConfig, ncf_cfg: DictConfig, data: PreparedData, out: Path) -> dict:
    """`experiments.train_ncf.fit` of `ncf_cfg` on `data`: its row of the table."""
    from experiments.train_ncf import fit  # torch and Lightning only when a model is trained

    model_cfg = cfg.copy()
    model_cfg.ncf = ncf_cfg
    start = time.perf_counter()
    res = fit(model_cfg, data, out).result
    return {
        "model": ncf_cfg.name, "parameter": "epochs", "chosen": res.best_epoch + 1,
        "valid_ndcg@10": res.valid["val_ndcg@10"], **{m: res.test[f"test_{m}"] for m in METRICS},
        "seconds": time.perf_counter() - start,
    }  # fmt: skip


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Markdown table's rows: chosen as `param=value`, test metrics named as such."""

    def chosen(r):
        return "-" if r["parameter"] is None else f"{r['parameter']}={r['chosen']:g}"

    return [
        {"model": r["model"], "chosen on validation": chosen(r),
         "valid ndcg@10": r["valid_ndcg@10"], **{f"test {m}": r[m] for m in METRICS},
         "seconds": r["seconds"]}
        for r in rows
    ]  # fmt: skip


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every model of the table on one prepared split; writes the table and the manifest to
    `cfg.paths.output_dir`; returns what baselines.json holds."""
    check_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    threads = int(cfg.threads) if cfg.threads else None
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    write_resolved_config(out_dir, cfg)  # first: a run that fails still says how it was set
    data = prepare_data(cfg.data, cfg.split)
    _log.info("%s", data.report)
    prepare_s = time.perf_counter() - start
    wins = windows(cfg, data)
    rows = []
    for enabled, ncf_cfg in ((cfg.baselines.two_tower, cfg.ncf), (cfg.baselines.mf, cfg.mf)):
        if enabled:
            rows.append(_trained_row(cfg, ncf_cfg, data, out_dir / ncf_cfg.name))
            _log.info("%s: test ndcg@10 %.4f", ncf_cfg.name, rows[-1]["ndcg@10"])
    with threadpool_limits(threads) if threads else nullcontext():
        closed = baseline_rows(wins["valid"], wins["test"], METRICS, candidates=candidates(cfg))
    rows += [{k: r[k] for k in _ROW_KEYS} for r in closed]
    fingerprint, version = data.log.fingerprint(), code_version()
    result = {
        "data": cfg.data.name,
        "split": data.split.kind,
        "windows": {name: _describe(w) for name, w in wins.items()},
        "metrics": "test, full ranking of every course, courses watched before excluded",
        "rows": rows,
        "data_fingerprint": fingerprint,
        "code_version": version,
    }
    title = f"Baselines on {cfg.data.name}, {data.split.kind} split"
    log_table(table_rows(rows), title, _log)
    data.report.write_json(out_dir / "data_report.json")
    write_json(out_dir / "baselines.json", result)
    write_text(
        out_dir / "baselines.md",
        f"{markdown_table(table_rows(rows), title)}\n\n"
        f"Each parameter chosen on validation NDCG@10, then one test evaluation; "
        f"{result['windows']['test']['learners']:,} test learners, "
        f"{result['windows']['test']['courses']:,} courses ranked.\n"
        f"Data fingerprint {fingerprint}; code {version}.\n",
    )
    timings = {"prepare": prepare_s, **{r["model"]: r["seconds"] for r in rows},
               "total": time.perf_counter() - start}  # fmt: skip
    write_manifest(
        out_dir, cfg, data_fingerprint=fingerprint, metrics={"rows": rows}, timings=timings
    )
    _log.info("wrote %s", out_dir)
    return result


def _describe(window: Window) -> dict[str, int]:
    return {
        "learners": int((np.diff(window.truth.indptr) > 0).sum()),  # evaluated: with labels
        "courses": int(window.truth.shape[1]),
        "input_pairs": int(window.inputs.nnz),
        "label_pairs": int(window.truth.nnz),
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="baselines")
def main(cfg: DictConfig) -> None:
    log_into_run_folder(cfg.paths.output_dir, HydraConfig.get().job.name)
    run(cfg)


if __name__ == "__main__":
    main()
