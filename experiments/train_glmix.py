"""Train GLMix: `python -m experiments.train_glmix data=... glmix=... [overrides]`, or again
inside a pipeline run's folder: `... run_dir=<run> [glmix/outputs overrides]`.

Wiring only: the config is unpacked here into `glmix.fit_on_split` (rows -> features ->
designs -> weights -> coordinate descent kept best on validation -> optional refit on
train + valid, stopped at the kept update -> test once). Writes metrics, history, the
scorer folder `model/` (GLMix + feature encoders + label factors: `glmix.GLMixScorer.load`
scores pairs from the learner and course tables alone) and the manifest.

`fit(cfg, data, split)` is the same without files, for a pipeline stage that needs a scorer
trained on another split (e.g. `data.split.for_blend_models()`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments.data import PreparedData, prepare_data
from experiments.provenance import write_manifest
from experiments.ranks import is_writer, process_group_size
from experiments.retrain import command_overrides, retrain_in_run
from experiments.run_log import log_into_run_folder
from experiments.schemas import check_config
from glmix import EntityFeaturizer, TrainedGLMix, fit_on_split
from glmix.rows import DataDoesNotFit, require_impressions
from watchlog import DataReport
from watchlog.io import write_json, write_parquet
from watchlog.splits import Split

__all__ = [
    "MODEL_BEFORE_REFIT", "run", "fit", "featurizer_from", "row_settings", "train_and_report",
]  # fmt: skip

_log = logging.getLogger(__name__)

MODEL_BEFORE_REFIT = "model_before_refit"  # beside model/ when refitted (see train_ncf)


_FEATURE_LISTS = ("categorical", "multi_hot", "numeric")


def featurizer_from(
    g: DictConfig, seed: int, log=None, report: DataReport | None = None
) -> EntityFeaturizer:
    """The (unfitted) featurizer of a `conf/glmix` config. With `log`: feature columns its
    learner / course tables lack are left out, with the design terms that use them (a
    warning and a report note say which): a user's tables rarely have the platform's columns."""
    lf = g.features.label_factors
    d = g.design
    specs = {side: OmegaConf.to_container(g.features[side]) for side in ("learner", "course")}
    terms = {name: OmegaConf.to_container(d[name])
             for name in ("global_terms", "crosses", "coordinates")}  # fmt: skip
    if log is not None:
        tables = {"learner": log.learners, "course": log.courses}
        dropped = {f"{side}.{c}" for side, spec in specs.items()
                   for c in _spec_columns(spec) if c not in tables[side].columns}  # fmt: skip
        if dropped:
            specs, terms = _without_columns(specs, terms, dropped)
            text = (f"GLMix features: {len(dropped)} configured column(s) not in the learner / "
                    f"course tables, left out with the design terms using them: "
                    f"{sorted(dropped)} (glmix.features, glmix.design)")  # fmt: skip
            _log.warning("%s", text)
            if report is not None:
                report.note(text)
        for side, spec in specs.items():
            if not _spec_columns(spec):
                raise DataDoesNotFit(
                    f"GLMix features: the {side} table has none of the configured feature "
                    f"columns ({sorted(c for c in dropped if c.startswith(side + '.'))}; it has "
                    f"{list(tables[side].columns)}), and GLMix needs at least one per side. Fix: "
                    f"give a {side}s table with such columns (data.source.{side}s), set "
                    f"glmix.features.{side} to columns it has, or stages.glmix=false"
                )
    return EntityFeaturizer(
        specs["learner"],
        specs["course"],
        factor_rank=int(lf.rank) if lf else None,
        factor_scale=float(lf.scale) if lf else 1.0,
        factor_seed=seed,
        **terms,
    )


def _without_columns(
    specs: dict[str, dict], terms: dict[str, Any], dropped: set[str]
) -> tuple[dict[str, dict], dict[str, Any]]:
    """The feature specs and design terms without the `dropped` ("side.column") columns."""

    def keep(term) -> bool:  # a term is a column name or a tuple of them (a cross)
        return not ({term} if isinstance(term, str) else set(term)) & dropped

    specs = {
        side: {**spec,
               **{k: [c for c in spec.get(k) or [] if f"{side}.{c}" not in dropped]
                  for k in _FEATURE_LISTS},
               **({"scaled": {c: v for c, v in spec["scaled"].items()
                              if f"{side}.{c}" not in dropped}} if spec.get("scaled") else {})}
        for side, spec in specs.items()
    }  # fmt: skip
    terms = {
        "global_terms": [t for t in terms["global_terms"] if keep(t)],
        "crosses": [t for t in terms["crosses"] if keep(t)],
        "coordinates": {k: [t for t in v if keep(t)] for k, v in terms["coordinates"].items()},
    }
    return specs, terms


def _spec_columns(spec: dict[str, Any]) -> list[str]:
    cols = [c for key in _FEATURE_LISTS for c in spec.get(key) or []]
    return cols + list((spec.get("scaled") or {}).keys())


def row_settings(g: DictConfig, seed: int) -> dict[str, Any]:
    """`glmix.row_sets` keywords of a `conf/glmix` config (the evaluate stage rebuilds the
    test rows with them)."""
    r = g.rows
    return {"events": r.events, "label": r.label, "negatives": r.get("negatives", "impressions"),
            "negative_ratio": float(r.get("negative_ratio", 4.0)), "seed": seed}  # fmt: skip


def fit(
    cfg: DictConfig, data: PreparedData, split: Split | None = None, state_dir: Path | None = None
) -> TrainedGLMix:
    """Fit `cfg.glmix` on `split` (default: `data.split`); report steps go to data.report.
    state_dir: where coordinate descent saves its progress after every update, to resume
    from (`glmix.fit_on_split`); the caller vouches it belongs to this config and data.

    In a process group (the pipeline under `trainer=ddp*`, after the two-tower's DDP fit
    created it) every rank holds the same rows and GLMix shards the random-effect entities
    over the ranks (`glmix.distributed`): the same model as one process, up to the order of
    floating-point sums. Without one nothing changes (one process, no communication)."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    g = cfg.glmix
    sharded = {"distributed": True} if process_group_size() > 1 else {}
    split = data.split if split is None else split
    rows = row_settings(g, int(cfg.seed))
    if rows["events"] == "impressions" and rows["negatives"] == "impressions":
        require_impressions(split)  # the first thing to say about implicit data
    return fit_on_split(
        data.log,
        split,
        model=instantiate(g.model, _convert_="all", **sharded),
        featurizer=featurizer_from(g, int(cfg.seed), data.log, data.report),
        **rows,
        weighting=OmegaConf.to_container(g.weighting),
        refit=bool(g.refit),
        report=data.report,
        state_dir=state_dir,
    )


def run(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """Data stage, fit, test, write everything into the run's output directory.

    With `run_dir` set: retrain the stage inside that pipeline run's folder instead, the run's
    settings changed by `overrides` (the command line's; `main` passes Hydra's) under `glmix`,
    `outputs`, `seed`, `threads` alone (`experiments.retrain`)."""
    check_config(cfg)  # keys added with `+` past the schemas, before any work
    if cfg.get("run_dir"):
        return retrain_in_run(cfg, overrides, "glmix", train_and_report)
    return train_and_report(cfg, None, Path(cfg.paths.output_dir))


def train_and_report(
    cfg: DictConfig, data: PreparedData | None, out_dir: Path, *, resume: bool = False
) -> dict[str, Any]:
    """Data stage (unless `data` is given: the main pipeline passes what it prepared), fit,
    test once, write everything into `out_dir`; resume: continue a killed fit there."""
    start = time.perf_counter()
    if data is None:
        data = prepare_data(cfg.data, cfg.split, DataReport())
        _log.info("%s", data.report)  # in the pipeline, the data stage has shown it
    trained = fit(cfg, data, state_dir=out_dir if resume else None)
    if not is_writer():  # another rank of a distributed run: rank 0 writes
        return {"model": cfg.glmix.name, **trained.metrics}
    data.report.write_json(out_dir / "data_report.json")
    outputs = _write_outputs(cfg, trained, out_dir)
    timings = {**trained.timings, "total": time.perf_counter() - start}
    metrics = {"model": cfg.glmix.name, **trained.metrics}
    history = trained.selected.history_
    write_json(
        out_dir / "metrics.json",
        {**metrics, "history": history, "timings": timings, "outputs": outputs},
    )
    write_manifest(
        out_dir, cfg, data_fingerprint=data.log.fingerprint(), metrics=metrics, timings=timings
    )
    _print_summary(trained, timings, out_dir)
    return {**metrics, "history": history, "timings": timings}


def _write_outputs(cfg: DictConfig, trained: TrainedGLMix, out_dir: Path) -> dict[str, str]:
    written: dict[str, str] = {}
    if cfg.outputs.model:
        written["model"] = str(trained.scorer.save(out_dir / "model"))
        if cfg.glmix.refit:  # the model chosen on validation, before the refit
            path = out_dir / MODEL_BEFORE_REFIT
            written["model_before_refit"] = str(trained.selected_scorer.save(path))
    if cfg.outputs.test_scores:
        test, sc = trained.rows["test"], trained.test_scores
        frame = pd.DataFrame(
            {
                "learner_id": test.events["learner_id"].to_numpy(),
                "course_id": test.events["course_id"].to_numpy(),
                "y": test.y,
                "glmix_logit": sc.total,
                **{f"glmix_{c}": s for c, s in sc.components.items()},
            }
        )
        written["test_scores"] = str(write_parquet(out_dir / "test_scores.parquet", frame))
    return written


def _print_summary(trained: TrainedGLMix, timings, out_dir: Path) -> None:
    model, m = trained.selected, trained.metrics
    lines = ["update  pass  coordinate    objective   val_auc"]
    lines += [
        f"{i:6d}  {h['pass']:4d}  {h['coordinate']:<12s}  {h['objective']:10.2f}  "
        f"{h.get('val_auc', float('nan')):.4f}"
        for i, h in enumerate(model.history_)
    ]
    _log.info("GLMix validation history\n%s", "\n".join(lines))
    _log.info("rows (%s negatives): %s", m["negatives"], "; ".join(
        f"{k} " + ", ".join(f"{n:,} {what}" for what, n in v.items())
        for k, v in m["rows"].items()))  # fmt: skip
    b, bv = model.best_, model.best_valid_
    if model.keep_best and bv is not None:
        _log.info("kept update %d (pass %d, %s), chosen on validation", b["update"], b["pass"],
                  b["coordinate"])  # fmt: skip
    else:
        _log.info("kept the last update %d (pass %d, %s): keep_best is off%s", b["update"],
                  b["pass"], b["coordinate"],
                  "" if bv is None else f"; the best on validation was update {bv['update']}")  # fmt: skip
    if m["refit"]:
        _log.info("refit on train + valid: %d updates (%s rows)", m["refit_updates"],
                  f"{m['train_rows']:,}")  # fmt: skip
    for name in ("valid", "test"):
        r = m[name]
        _log.info(
            "%s: auc=%.4f log_loss=%.4f per_learner_auc=%.4f unknown=%s",
            name, r["auc"], r["log_loss"], r["per_entity_auc_mean"], r["n_unknown"],
        )  # fmt: skip
    _log.info("timings (s): %s", ", ".join(f"{k}={v:.3g}" for k, v in timings.items()))
    _log.info("wrote %s", out_dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_glmix")
def main(cfg: DictConfig) -> None:
    log_into_run_folder(cfg.paths.output_dir, HydraConfig.get().job.name)
    run(cfg, command_overrides())


if __name__ == "__main__":
    main()
