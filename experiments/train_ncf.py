"""Train the two-tower: `python -m experiments.train_ncf data=... ncf=... [overrides]`, or
again inside a pipeline run's folder: `... run_dir=<run> [ncf/trainer/outputs overrides]`.

data stage -> NCFDataModule (snapshots) -> TwoTower + NCFModule -> fit on validation, test
once (`ncf.training.fit_and_test`) -> model folder, embeddings, plots, metrics, manifest, and
the test's per-learner NDCG@10 / Recall@10 (`test_per_learner.parquet`), from which the
metrics' `test_ci` is drawn again for other interval settings (`redraw_test_intervals`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluation import knn_label_agreement
from experiments.data import PreparedData, prepare_data
from experiments.provenance import write_manifest
from experiments.ranks import is_writer
from experiments.retrain import command_overrides, retrain_in_run
from experiments.run_log import log_into_run_folder
from experiments.schemas import check_config
from experiments.summary import Intervals
from ncf.content import course_content
from ncf.datamodule import NCFDataModule
from ncf.ensemble import TwoTowerEnsemble
from ncf.model import TwoTower
from ncf.recommender import NCFRecommender
from ncf.training import TrainResult, evaluate, fit_and_test, zero_untrained_id_rows
from watchlog.idmap import positions_in
from watchlog.io import write_json, write_parquet
from watchlog.splits import Split

__all__ = [
    "MEMBER_SEED_STRIDE",
    "MODEL_BEFORE_REFIT",
    "TEST_PER_LEARNER",
    "TrainedNCF",
    "check_neighbour_course",
    "fit",
    "redraw_test_intervals",
    "run",
    "train_and_report",
    "trainer_callbacks",
]

_log = logging.getLogger(__name__)

# The model chosen on validation (before the refit, when there is one), serving the
# validation snapshot: what a blender fitted on validation scores with. Written beside model/
# with or without a refit: model/ serves the test snapshot, whose inputs hold the validation
# window's watches (and exclude them from its lists as already watched).
MODEL_BEFORE_REFIT = "model_before_refit"

# An ensemble's member i (ncf.ensemble_size > 1) is seeded seed + MEMBER_SEED_STRIDE * i: the
# first member is seeded as a single model is, and runs of nearby seeds (0, 1, 2) share no
# member (with seed + i, seed 0's second member would be seed 1's first).
MEMBER_SEED_STRIDE = 1000


@dataclass(frozen=True, eq=False)
class TrainedNCF:
    data: PreparedData
    datamodule: NCFDataModule
    recommender: NCFRecommender  # the tested model (refitted when ncf.refit), test snapshot
    result: TrainResult
    prepare_s: float
    # The model chosen on validation, before any refit (the best checkpoint's weights), serving
    # the validation snapshot: what a blender fitted on the validation window must score with.
    valid_recommender: NCFRecommender | None = None


def fit(
    cfg: DictConfig,
    data: PreparedData | None = None,
    out_dir: Path | None = None,
    *,
    split: Split | None = None,
    resume: bool = False,
) -> TrainedNCF:
    """Data stage (unless `data` is given), snapshots, model, fit on validation, test once.

    split: the temporal (or other) split to train, validate and test on; default: the
    prepared data's (`data.split`). Both recommenders carry the InputBuilder, so their
    saved folders can be served at later cutoffs (`NCFRecommender.at`).
    Writes nothing but the Lightning logs and checkpoints under `out_dir` (default: the run's
    output directory). resume: continue the fit those checkpoints hold
    (`ncf.training.fit_and_test`); the caller vouches that `out_dir` belongs to this config
    and data (`experiments.stages` does)."""
    check_config(cfg)
    out_dir = Path(cfg.paths.output_dir) if out_dir is None else out_dir
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(cfg.seed, workers=True)
    start = time.perf_counter()
    data = prepare_data(cfg.data, cfg.split) if data is None else data
    split = data.split if split is None else split
    log = data.log
    check_neighbour_course(cfg.get("outputs"), log)  # the plots come after training
    content = None
    if cfg.ncf.content:
        content = course_content(log.courses, **OmegaConf.to_container(cfg.ncf.content))
    inputs = instantiate(cfg.ncf.inputs, _convert_="all")
    dm = instantiate(cfg.ncf.datamodule, _convert_="all")(
        log, split, inputs, content=content, report=data.report
    )
    dm.setup("fit")
    prepare_s = time.perf_counter() - start

    n_content = 0 if content is None else content.shape[1]
    size = int(cfg.ncf.ensemble_size)
    if size > 1 and cfg.ncf.model.score != "dot":  # before any training, not after K fits
        raise ValueError(
            f"ncf.ensemble_size={size} needs ncf.model.score=dot, got {cfg.ncf.model.score!r}: "
            "an ensemble serves the mean of its members' dot products"
        )
    if size == 1:
        model, result = _fit_member(cfg, dm, n_content, out_dir, resume=resume)
        valid_model = _best_checkpoint_model(model, result.checkpoint, dm.trained_learners())
    else:  # members differ in their seed alone; each fits and chooses its epoch on its own
        seeds = [int(cfg.seed) + MEMBER_SEED_STRIDE * i for i in range(size)]
        members = [
            _fit_member(cfg, dm.reseeded(s), n_content, out_dir / "members" / str(i),
                        seed=s, resume=resume)
            for i, s in enumerate(seeds)
        ]  # fmt: skip
        model = TwoTowerEnsemble([m for m, _ in members])
        trained = dm.trained_learners()  # the members' snapshots are dm's
        valid_model = TwoTowerEnsemble(
            [_best_checkpoint_model(m, r.checkpoint, trained) for m, r in members]
        )
        result = _ensemble_result(cfg, dm, model, valid_model, [r for _, r in members], seeds)
    serve = dict(inputs=inputs, content=content, normalize=dm.normalize)
    # Serve from the test snapshot: inputs up to the test cutoff, as the test metrics were.
    rec = NCFRecommender(model, dm.test, log.learner_ids, log.course_ids, **serve)
    valid_rec = NCFRecommender(valid_model, dm.valid, log.learner_ids, log.course_ids, **serve)
    return TrainedNCF(data, dm, rec, result, prepare_s, valid_rec)


def _fit_member(
    cfg: DictConfig,
    dm: NCFDataModule,
    n_content: int,
    out_dir: Path,
    *,
    seed: int | None = None,
    resume: bool = False,
) -> tuple[TwoTower, TrainResult]:
    """One two-tower built from `cfg.ncf`, fitted on validation and tested
    (`fit_and_test`, its checkpoints and logs under `out_dir`). seed: an ensemble member's
    (reseeds the initial weights and the module's draws); None: the run's, already set."""
    if seed is not None:
        pl.seed_everything(seed, workers=True, verbose=False)
    log = dm.event_log
    model = instantiate(cfg.ncf.model, _convert_="all")(
        log.n_learners, log.n_courses, n_content_features=n_content
    )
    seeded = {} if seed is None else {"seed": seed}
    module = instantiate(cfg.ncf.module, _convert_="all", **seeded)(
        model, course_popularity=dm.course_popularity()
    )
    result = fit_and_test(
        dm, module, out_dir,
        monitor=cfg.ncf.monitor, patience=cfg.ncf.patience, refit=cfg.ncf.refit,
        trainer_kwargs=_trainer_kwargs(cfg), callbacks=trainer_callbacks(cfg.trainer),
        resume=resume, ema_decay=cfg.ncf.ema_decay,
    )  # fmt: skip
    return model, result


def _trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("callbacks", None)  # built by trainer_callbacks
    return kwargs


def _ensemble_result(
    cfg: DictConfig,
    dm: NCFDataModule,
    model: TwoTowerEnsemble,
    valid_model: TwoTowerEnsemble,
    members: list[TrainResult],
    seeds: list[int],
) -> TrainResult:
    """The ensemble's own validation and test metrics, as `fit_and_test` reports one model's:
    validation scores the members chosen on it (`valid_model`), test the tested members
    (refitted with `ncf.refit`; `test_before_refit` the chosen ones). Each member's epoch,
    metrics and timings are kept under `extra["members"]`; `best_epoch`, `epochs_run`, the
    checkpoint and the training curve are the first member's."""

    popularity = dm.course_popularity()

    def module(m: TwoTowerEnsemble):
        return instantiate(cfg.ncf.module, _convert_="all")(m, course_popularity=popularity)

    kwargs = _trainer_kwargs(cfg)
    valid, _ = evaluate(module(valid_model), dm, "validate", trainer_kwargs=kwargs)
    extra: dict[str, Any] = {"world_size": members[0].extra.get("world_size", 1)}
    if cfg.ncf.refit:
        before, _ = evaluate(module(valid_model), dm, "test", trainer_kwargs=kwargs)
        extra["test_before_refit"] = before
    test, per_user = evaluate(module(model), dm, "test", trainer_kwargs=kwargs)
    extra["members"] = [
        {"seed": s, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run, "valid": r.valid,
         "test": r.test, "test_before_refit": r.extra.get("test_before_refit"),
         "timings": r.timings}
        for s, r in zip(seeds, members, strict=True)
    ]  # fmt: skip
    timings = _ensemble_timings([r.timings for r in members])
    first = members[0]
    return TrainResult(
        best_epoch=first.best_epoch, best_score=valid[cfg.ncf.monitor],
        epochs_run=first.epochs_run, valid=valid, test=test, timings=timings,
        checkpoint=first.checkpoint, metrics_csv=first.metrics_csv, test_per_user=per_user,
        extra=extra,
    )  # fmt: skip


def _ensemble_timings(members: list[dict[str, float]]) -> dict[str, float]:
    """The keys of one fit's timings (`fit_and_test`) for K members: seconds summed, rates
    and seconds per epoch averaged, the evaluation share recomputed from the sums."""
    seconds = ("fit", "train_batches", "validation", "refit", "test")
    out = {k: sum(t.get(k, 0.0) for t in members) for k in seconds}
    for k in ("train_learners_per_s", "train_positives_per_s", "seconds_per_epoch"):
        out[k] = sum(t.get(k, 0.0) for t in members) / len(members)
    out["evaluation_share_of_training"] = (out["validation"] + out["test"]) / max(
        out["train_batches"] + out["refit"], 1e-9
    )
    return out


def check_neighbour_course(outputs_cfg: DictConfig | None, log) -> None:
    """Raise, before any training, when `outputs.neighbour_course` (the neighbour figure's
    course) is not a course id of the data; null (the most watched course) passes."""
    course = outputs_cfg.get("neighbour_course") if outputs_cfg is not None else None
    if course is None:
        return
    ids = log.course_ids.index
    if (positions_in(ids, [course]) >= 0).all():
        return
    examples = ", ".join(repr(x) for x in ids[:3])
    raise ValueError(
        f"outputs.neighbour_course={course!r} ({type(course).__name__}): not a course id of "
        f"the data ({len(ids):,} courses, ids like {examples}, {ids.dtype}); give one of "
        "them, or null for the most watched course"
    )


def trainer_callbacks(trainer_cfg: DictConfig) -> list[pl.Callback]:
    """`trainer.callbacks` instantiated: a mapping name -> `_target_` config (null entries
    are switched off) or a list of them; new objects on every call (one set per Trainer)."""
    spec = trainer_cfg.get("callbacks")
    if spec is None:
        return []
    named = spec.items() if isinstance(spec, DictConfig) else enumerate(spec)
    callbacks = []
    for name, node in named:
        if node is None:
            continue
        callback = instantiate(node)
        if not isinstance(callback, pl.Callback):
            raise TypeError(
                f"trainer.callbacks.{name}: {type(callback).__name__} is not a Lightning "
                "Callback; give a _target_ that builds one"
            )
        callbacks.append(callback)
    return callbacks


def _best_checkpoint_model(model: TwoTower, checkpoint: str, trained: np.ndarray) -> TwoTower:
    """A copy of `model` with the weights of the checkpoint chosen on validation (the
    Lightning module's state dict: the model's parameters under `model.`), the learner ID
    rows of learners without a training row (`trained`: (n_learners,) bool, the fit's
    `NCFDataModule.trained_learners()`) set to zero as `fit_and_test` does before it
    validates: the weights the reported validation metrics were computed on."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    best = copy.deepcopy(model)
    best.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    zero_untrained_id_rows(best, trained)
    return best


def run(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """`fit`, then write metrics, model, embeddings, plots and the run manifest.

    With `run_dir` set: retrain the stage inside that pipeline run's folder instead, the run's
    settings changed by `overrides` (the command line's; `main` passes Hydra's) under `ncf`,
    `trainer`, `outputs`, `seed`, `threads` alone (`experiments.retrain`)."""
    if cfg.get("run_dir"):
        return retrain_in_run(cfg, overrides, "ncf", train_and_report)
    return train_and_report(cfg, None, Path(cfg.paths.output_dir))


def train_and_report(
    cfg: DictConfig, data: PreparedData | None, out_dir: Path, *, resume: bool = False
) -> dict[str, Any]:
    """`fit` into `out_dir`, then write its metrics, model, embeddings, plots and manifest
    there (the main pipeline calls this with the data it already prepared, resuming). Under
    DDP only rank 0 writes; the other ranks return the test metrics (the same on every rank)."""
    start = time.perf_counter()
    standalone = data is None  # else the pipeline already showed the data report
    trained = fit(cfg, data, out_dir, resume=resume)
    data, dm, rec, result = trained.data, trained.datamodule, trained.recommender, trained.result
    if not is_writer():
        return {"best_epoch": result.best_epoch, "valid": result.valid, "test": result.test}
    if standalone:
        _log.info("%s", data.report)
    data.report.write_json(out_dir / "data_report.json")
    quality = embedding_quality(rec, data.log)
    outputs = write_outputs(cfg, rec, data.log, result, out_dir)
    if cfg.outputs.model:  # what a blender fitted on validation scores with
        outputs["model_before_refit"] = str(
            trained.valid_recommender.save(out_dir / MODEL_BEFORE_REFIT)
        )
    metrics = {
        "model": cfg.ncf.name,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "world_size": result.extra.get("world_size", 1),  # training processes (DDP ranks)
        "valid": result.valid,
        "test": result.test,
        # the model chosen on validation, before the refit (with ncf.refit only)
        "test_before_refit": result.extra.get("test_before_refit"),
        # an ensemble's members (ncf.ensemble_size > 1): seed, epoch, metrics, timings each
        **({"members": result.extra["members"]} if "members" in result.extra else {}),
        "test_ci": test_intervals(result.test_per_user, Intervals.of(cfg)),
        "test_ci_drawn": dataclasses.asdict(Intervals.of(cfg)),
        "embedding_quality": quality,
        "snapshots": {s.name: s.describe() for s in [*dm.train_snapshots, dm.valid, dm.test]},
    }
    write_test_per_learner(result.test_per_user, out_dir)
    timings = {"prepare": trained.prepare_s, **result.timings, "total": time.perf_counter() - start}
    write_json(out_dir / "metrics.json", {**metrics, "timings": timings, "outputs": outputs})
    write_manifest(
        out_dir, cfg, data_fingerprint=data.log.fingerprint(), metrics=metrics, timings=timings
    )
    _print_summary(result, quality, timings, out_dir)
    return {**metrics, "timings": timings}


# The test figures `test_ci` bands, per learner, kept (TEST_PER_LEARNER) so the bands can be
# drawn again for other interval settings without training again (`redraw_test_intervals`).
CI_METRICS = ("ndcg@10", "recall@10")
TEST_PER_LEARNER = "test_per_learner.parquet"


def write_test_per_learner(per_user, out_dir: Path) -> None:
    """`<out_dir>/test_per_learner.parquet`: learner (index), then each of CI_METRICS the
    test kept; nothing when the per-learner values were not kept."""
    if per_user is None:
        return
    columns = {n: per_user.per_user[n] for n in CI_METRICS if n in per_user.per_user}
    write_parquet(out_dir / TEST_PER_LEARNER, pd.DataFrame({"learner": per_user.users, **columns}))


def redraw_test_intervals(folder: Path, intervals: Intervals) -> dict[str, Any]:
    """A finished two-tower stage's metrics (`<folder>/metrics.json`) with `test_ci` drawn as
    `intervals` draws them: the file as it is when they were drawn so, else the bands drawn
    again from the kept per-learner values (TEST_PER_LEARNER) and the file rewritten
    (atomically). A CI or resample count changed for the evaluation then changes the
    two-tower's bands too, without training again."""
    metrics = json.loads((folder / "metrics.json").read_text())
    wanted = dataclasses.asdict(intervals)
    if metrics.get("test_ci_drawn") == wanted or not (folder / TEST_PER_LEARNER).is_file():
        return metrics
    table = pd.read_parquet(folder / TEST_PER_LEARNER)
    per_learner = {n: table[n].to_numpy(np.float64) for n in CI_METRICS if n in table}
    metrics["test_ci"] = {f"test_{n}": intervals.band(v) for n, v in per_learner.items()}
    metrics["test_ci_drawn"] = wanted
    write_json(folder / "metrics.json", metrics)
    _log.info("two-tower test intervals drawn again from %s: %s", folder / TEST_PER_LEARNER,
              intervals.describe())  # fmt: skip
    return metrics


def test_intervals(per_user, intervals: Intervals) -> dict[str, dict[str, float]]:
    """Bootstrap intervals over learners of the test NDCG@10 and Recall@10, drawn as the
    run's evaluate stage draws them (`Intervals.of`: the same figure, the same interval);
    empty when the per-learner values were not kept."""
    if per_user is None:
        return {}
    out = {}
    for name in CI_METRICS:
        if name in per_user.per_user:
            out[f"test_{name}"] = intervals.band(per_user.per_user[name])
    return out


def embedding_quality(rec: NCFRecommender, log) -> dict[str, dict[str, float]]:
    """k-NN label agreement of course embeddings by each categorical column of the catalogue
    (language, category, ...: `ncf.run_plots.categorical_columns`) with more than 10 labelled
    courses, against chance; a column left out, or none at all, says why in the log."""
    from ncf.run_plots import categorical_columns

    emb = rec.course_embeddings(with_bias=False)
    out = {}
    columns = categorical_columns(log.courses)
    for column in columns:
        labelled = int(log.courses[column].notna().sum())
        if labelled <= 10:
            _log.info("embedding quality: %s skipped, only %d courses labelled (needs > 10)",
                      column, labelled)  # fmt: skip
            continue
        q = knn_label_agreement(emb, log.courses[column].to_numpy(), k=10)
        out[column] = {key: q[key] for key in ("agreement", "chance", "lift", "n_labels")}
    if not columns:
        _log.info(
            "embedding quality: none measured; the catalogue has no categorical column to "
            "judge neighbours by (columns: %s). Give a courses table with e.g. a category or "
            "language column (data.source.courses)", list(log.courses.columns),
        )  # fmt: skip
    return out


def write_outputs(
    cfg: DictConfig, rec: NCFRecommender, log, result, out_dir: Path
) -> dict[str, str]:
    written: dict[str, str] = {}
    if cfg.outputs.model:
        written["model"] = str(rec.save(out_dir / "model"))
    if cfg.outputs.embeddings:
        written.update(
            {k: str(v) for k, v in rec.export_embeddings(out_dir / "embeddings").items()}
        )
    if not cfg.outputs.plots:
        _log.info("plots: skipped (outputs.plots=false)")
    else:
        from ncf.run_plots import plot_run  # matplotlib/umap only when plots are asked for

        written.update(
            plot_run(
                rec, log, result.metrics_csv, out_dir / "plots",
                method=cfg.outputs.plot_method, course_id=cfg.outputs.neighbour_course,
                seed=cfg.seed,
            )
        )  # fmt: skip
    return written


def _print_summary(result, quality, timings, out_dir: Path) -> None:
    _log.info("best epoch %d of %d (chosen on validation; counted from 1, as the epoch lines)",
              result.best_epoch + 1, result.epochs_run)  # fmt: skip
    for split, m in (("valid", result.valid), ("test", result.test)):
        _log.info("%s: %s", split, ", ".join(f"{k}={v:.4f}" for k, v in sorted(m.items())))
    for column, q in quality.items():
        _log.info(
            "course embeddings, k-NN %s agreement: %s",
            column, ", ".join(f"{k}={v:.3f}" for k, v in q.items() if isinstance(v, float)),
        )  # fmt: skip
    _log.info("timings (s): %s", ", ".join(f"{k}={v:.3g}" for k, v in timings.items()))
    _log.info("wrote %s", out_dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_ncf")
def main(cfg: DictConfig) -> None:
    log_into_run_folder(cfg.paths.output_dir, HydraConfig.get().job.name)
    run(cfg, command_overrides())


if __name__ == "__main__":
    main()
