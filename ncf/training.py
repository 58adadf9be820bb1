"""Fit on validation, then test: the loop every NCF run (experiment or benchmark) uses.

    result = fit_and_test(datamodule, module, out_dir, callbacks=[...], trainer_kwargs={...})

1. `Trainer.fit` with the given callbacks (the experiments build them from `trainer.callbacks`;
   `default_callbacks` otherwise): a `PhaseTimer`, a `ModelCheckpoint` on the validation
   metric (`monitor`, default val_ndcg@10) and usually `EarlyStopping` on it: the epoch is
   chosen on validation, never on test.
2. The best checkpoint's weights are loaded back (`torch.load(..., weights_only=True)`). With
   learner ID embeddings, the ID rows of learners that had no training row (no labels in any
   training snapshot) never got a gradient: they are set to zero (`zero_untrained_id_rows`),
   the ID vector of a learner unknown to the model, before validation is recomputed, so
   validation, test and the saved model see the same weights. The refit, trained on other
   snapshots, is treated the same way.
   With weight averaging (`ema_decay`, or a Lightning `WeightAveraging` among the callbacks)
   the averaged weights are the model: validation scores them, the best checkpoint holds
   them, the refit averages too, and they are tested and served.
3. `Trainer.test` on the test snapshot: the result. With a refit, the model chosen on
   validation is tested too, before the refit replaces it (`test_before_refit` in the
   metrics: reported, never used to choose anything; with the split moved one window
   earlier it says whether refitting helps).
With `resume=True` a fit killed half-way continues from `checkpoints/last.ckpt` (written
atomically after every epoch, with the generator states: `ncf.checkpointing`) and ends with
the weights an uninterrupted fit ends with; a finished fit (`checkpoints/fit_done.json`) is
not run again, only the refit and the test that follow it.
Wall time is split into training batches and validation (`PhaseTimer`), so a run can show
that evaluation stays a small part of training.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
    WeightAveraging,
)
from pytorch_lightning.loggers import CSVLogger

from evaluation import RankingMetrics
from ncf.checkpointing import AtomicCheckpointIO, RNGState, loadable_checkpoint
from ncf.datamodule import NCFDataModule
from ncf.epoch_log import EpochLog, use_progress_bar
from ncf.model import TwoTower
from ncf.module import NCFModule
from watchlog.io import write_json

__all__ = [
    "PhaseTimer", "TrainResult", "default_callbacks", "evaluate", "expected_warnings_silenced",
    "fit_and_test", "zero_untrained_id_rows",
]  # fmt: skip

_log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"  # under <out_dir>/checkpoints: the latest epoch, to resume from
FIT_DONE = "fit_done.json"  # under <out_dir>/checkpoints: the first fit finished (its result)

# Lightning warnings that do not apply here, silenced around our own fits (never globally, so
# a caller's filters stay as they were): our IterableDatasets run in the main process (no
# workers to split them), and overriding transfer_batch_to_device in the module (to keep scipy
# rows on the host and cache the course bags on the device) is deliberate. Under DDP Lightning
# advises sync_dist=True for epoch metrics: ours are computed on the gathered top-k lists of
# every rank (the same values everywhere; averaging per-rank metrics is what it would do), and
# train_loss is rank 0's own.
_EXPECTED_WARNINGS = (
    r".*IterableDataset.*has `__len__` defined",
    r"It is recommended to use `self.log\(.*sync_dist=True\)` when logging on epoch level",
    r"You have overridden `transfer_batch_to_device`",
    r".*isinstance\(treespec, LeafSpec\)",
    r".*litlogger",
)


@contextlib.contextmanager
def expected_warnings_silenced():
    """Inside: Lightning's warnings listed in `_EXPECTED_WARNINGS` are ignored."""
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


class PhaseTimer(pl.Callback):
    """Seconds spent in training batches and in validation, summed over the whole fit.

    (Lightning's `Timer` keeps only the last validation's span, not the sum.)
    """

    def __init__(self) -> None:
        self.train_s = self.validate_s = 0.0
        self.learners = self.positives = 0  # training rows seen, and their positive pairs
        self._t0 = self._v0 = self._val_this_epoch = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.learners += int(batch["learners"].shape[0])
        self.positives += int(batch["labels"].indices.shape[0])

    def on_train_epoch_end(self, trainer, module) -> None:
        # Lightning runs the epoch's validation before on_train_epoch_end: subtract it.
        self.train_s += time.perf_counter() - self._t0 - self._val_this_epoch
        self._val_this_epoch = 0.0

    def on_validation_start(self, trainer, module) -> None:
        self._v0 = time.perf_counter()

    def on_validation_end(self, trainer, module) -> None:
        dt = time.perf_counter() - self._v0
        self.validate_s += dt
        self._val_this_epoch += dt


@dataclass
class TrainResult:
    best_epoch: int  # 0-based (Lightning's epoch index; metrics.json's best_epoch); logs add 1
    best_score: float
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    timings: dict[str, float]
    checkpoint: str
    metrics_csv: str | None
    test_per_user: RankingMetrics | None = None  # users = learner indices
    extra: dict[str, Any] = field(default_factory=dict)


def default_callbacks(monitor: str = "val_ndcg@10", patience: int = 5) -> list[pl.Callback]:
    """The callbacks conf/trainer/default.yaml lists: phase timer, best checkpoint on
    `monitor` (max; its folder is filled in by `fit_and_test`), early stopping on it."""
    return [
        PhaseTimer(),
        ModelCheckpoint(
            monitor=monitor, mode="max", save_top_k=1, filename="best", save_weights_only=True,
            auto_insert_metric_name=False, enable_version_counter=False,
        ),
        EarlyStopping(monitor=monitor, mode="max", patience=patience),
    ]  # fmt: skip


def zero_untrained_id_rows(model: TwoTower, trained: np.ndarray) -> int:
    """Set the learner ID rows of learners that did not train (`trained`: (n_learners,)
    bool, e.g. `NCFDataModule.trained_learners()`) to zero, in place; returns how many.

    Such a row never got a gradient from the loss, so it holds its random initialisation
    (larger than a real history vector): served later (`NCFRecommender.at`, once the learner
    has a history) it would add noise. Zero is the rows' prior mean and the ID vector a
    learner unknown to the model gets (`Tower.forward`, index -1), so such a learner is served
    from its other inputs alone. Without learner ID embeddings: nothing to do, 0.
    The course side (`course_ids=True`) is left alone: the full softmax (the default loss)
    scores every course in every batch, so every course ID row gets a gradient. (The sampled
    losses reach a course only when it is drawn as a positive or negative.)"""
    table = model.learner_tower.ids
    if table is None:
        return 0
    trained = np.asarray(trained, dtype=bool)
    if trained.shape != (table.num_embeddings,):
        raise ValueError(
            f"trained: one flag per learner ID row, expected shape ({table.num_embeddings},), "
            f"got {trained.shape}"
        )
    untrained = torch.from_numpy(~trained).to(table.weight.device)
    with torch.no_grad():
        table.weight[untrained] = 0.0
    return int((~trained).sum())


def fit_and_test(*args, **kwargs) -> TrainResult:
    """`_fit_and_test` with Lightning's expected warnings silenced (its docstring)."""
    with expected_warnings_silenced():
        return _fit_and_test(*args, **kwargs)


def _fit_and_test(
    datamodule: NCFDataModule,
    module: NCFModule,
    out_dir: str | Path,
    *,
    monitor: str = "val_ndcg@10",
    patience: int = 5,
    trainer_kwargs: dict[str, Any] | None = None,
    refit: bool = False,
    resume: bool = False,
    callbacks: Sequence[pl.Callback] | None = None,
    ema_decay: float | None = None,
) -> TrainResult:
    """Fit with early stopping on `monitor` (max), reload the best weights, test (module doc).

    callbacks: the Trainer's callbacks, used as given (None: `default_callbacks(monitor,
    patience)`; `patience` is used for nothing else). They must hold one `PhaseTimer` (the
    timings) and one `ModelCheckpoint` monitoring `monitor` (the best weights are reloaded
    from it); a checkpoint without a `dirpath` writes to `<out_dir>/checkpoints`. The refit
    below runs without them (it has no validation to monitor).

    refit: after the epoch is chosen on validation, train the same initial weights again for
    that many epochs on data moved forward to the test cutoff (`NCFDataModule.for_refit`:
    the validation labels become training data), reseeded with `module.seed`, then test that
    model. The epoch count is still chosen on validation only; the reported validation
    metrics are those of the model chosen before the refit.
    resume: continue a fit that `out_dir` holds (see the module docstring); the caller makes
    sure the folder belongs to the same data and settings. False: start afresh (a previous
    run's resume files there are removed).
    ema_decay: keep an exponential moving average of the weights, updated after every
    optimizer step with this decay (Lightning's `EMAWeightAveraging`; None: no averaging).
    Any `WeightAveraging` (this one or one among `callbacks`) is swapped in for every
    validation, so the epoch is chosen on the averaged weights; the best checkpoint is then
    saved whole (Lightning puts the averaged weights in its state_dict only there, not in a
    weights-only one), and the refit averages with a fresh copy of the same callback.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    last_path, done_path = ckpt_dir / LAST_CHECKPOINT, ckpt_dir / FIT_DONE
    done = json.loads(done_path.read_text()) if resume and done_path.is_file() else None
    ckpt_path = None
    if resume and done is None and last_path.exists():
        if loadable_checkpoint(last_path):
            ckpt_path = last_path
            _log.info("resuming the two-tower fit from %s", last_path)
        else:
            last_path.replace(last_path.with_suffix(".unreadable"))
    if not resume:
        for path in (last_path, done_path):
            path.unlink(missing_ok=True)
    initial = copy.deepcopy(module) if refit else None
    callbacks = list(default_callbacks(monitor, patience) if callbacks is None else callbacks)
    timer = _the_one(callbacks, PhaseTimer, "{_target_: ncf.training.PhaseTimer}")
    checkpoint = _the_one(
        callbacks, ModelCheckpoint, "{_target_: pytorch_lightning.callbacks.ModelCheckpoint, "
        f"monitor: {monitor}, mode: max, save_top_k: 1, filename: best}}",
    )  # fmt: skip
    if checkpoint.monitor != monitor:
        raise ValueError(
            f"the ModelCheckpoint monitors {checkpoint.monitor!r} but the epoch is chosen on "
            f"{monitor!r} (ncf.monitor): set its monitor to {monitor!r} (conf/trainer/default.yaml "
            "interpolates ${ncf.monitor})"
        )
    if checkpoint.dirpath is None:  # as Lightning resolves a dirpath given to the constructor
        checkpoint.dirpath = os.path.realpath(out_dir / "checkpoints")
    averaging = _weight_averaging(callbacks, ema_decay)
    refit_callbacks = []
    if averaging is not None:
        if averaging not in callbacks:
            callbacks.append(averaging)
        checkpoint.save_weights_only = False  # else best.ckpt holds the raw weights
        refit_callbacks.append(copy.deepcopy(averaging))  # before the fit: no average yet
    if "callbacks" in (trainer_kwargs or {}):
        raise TypeError("pass the callbacks as callbacks=, not in trainer_kwargs")
    if resume:
        # The whole training state after every epoch (saved after `best`: Lightning runs
        # checkpoint callbacks last, in this order) and the RNG states, so a killed fit
        # resumes where it was: machinery of `resume`, not a choice of the config's.
        # No monitor and top 1: the latest epoch, saved every epoch. (save_last with
        # save_top_k=0 saves only when some checkpoint was saved that step, i.e. at train end:
        # a killed fit then restarted from its first epoch.)
        latest = ModelCheckpoint(
            dirpath=ckpt_dir, filename=Path(LAST_CHECKPOINT).stem, monitor=None, save_top_k=1,
            every_n_epochs=1, enable_version_counter=False, auto_insert_metric_name=False,
        )  # fmt: skip
        callbacks += [latest, RNGState()]
    kwargs = {
        "accelerator": "auto", "devices": 1, "max_epochs": 50, "num_sanity_val_steps": 0,
        "enable_model_summary": False, "log_every_n_steps": 1,
        **(trainer_kwargs or {}),
    }  # fmt: skip
    logger = kwargs.pop("logger", None)
    if logger is None:
        logger = CSVLogger(out_dir, name="logs", version="")
    # A terminal gets Lightning's bar; a log file or CI one line per epoch instead.
    kwargs["enable_progress_bar"] = use_progress_bar(kwargs.get("enable_progress_bar", True))
    if not kwargs["enable_progress_bar"]:
        callbacks.append(EpochLog(monitor))
    trainer = pl.Trainer(
        logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()], **kwargs
    )

    start = time.perf_counter()
    if done is None:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if not checkpoint.best_model_path:
            raise RuntimeError(f"no checkpoint was saved: was {monitor!r} ever logged?")
        done = {
            "best_model_path": checkpoint.best_model_path,
            "best_model_score": float(checkpoint.best_model_score),
            "epochs_run": int(trainer.current_epoch),
        }
        write_json(done_path, done)
    else:
        _log.info("two-tower fit already finished in %s; reusing its best checkpoint", ckpt_dir)
    fit_s = time.perf_counter() - start
    # Averaging is over: the best checkpoint holds its epoch's average. Left on the trainer, a
    # WeightAveraging would swap its last average in for the validation below.
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
    state = torch.load(done["best_model_path"], map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    untrained = _zero_untrained(module, datamodule, "the best checkpoint")
    # The best checkpoint's validation metrics, recomputed on the reloaded weights.
    valid = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    best_epoch = int(state.get("epoch", -1))
    refit_s, extra = 0.0, {"world_size": int(trainer.world_size)}  # > 1: data-parallel (DDP)
    if untrained is not None:  # learner ID rows set to zero (of the model tested)
        extra["untrained_learner_id_rows"] = untrained
    choice = datamodule.teacher_choice() if hasattr(datamodule, "teacher_choice") else None
    if choice is not None:  # the distillation teacher's L2, and each value's validation score
        extra["teacher_l2"] = choice.l2
        extra["teacher_valid_ndcg@10"] = {str(k): v for k, v in choice.valid_ndcg.items()}
    if refit:
        # The chosen model on test too, before the refit replaces it: with the split moved one
        # window earlier (test = the validation window), the pair says whether refitting helps.
        before = trainer.test(module, datamodule=datamodule, verbose=False)[0]
        extra["test_before_refit"] = {k: float(v) for k, v in before.items()}
        start = time.perf_counter()
        # Reseed: the refit's dropout draws then depend on the seed alone, not on how many
        # epochs (and RNG draws) the first fit happened to run before early stopping.
        pl.seed_everything(module.seed, workers=True, verbose=False)
        _log.info("refit: %d epochs (chosen on validation) with the validation window as "
                  "training data", best_epoch + 1)  # fmt: skip
        again = pl.Trainer(
            **{**kwargs, "max_epochs": best_epoch + 1, "limit_val_batches": 0},
            logger=False, enable_checkpointing=False, callbacks=refit_callbacks,
        )  # fmt: skip
        refit_data = datamodule.for_refit()
        again.fit(initial, datamodule=refit_data)
        module.load_state_dict(initial.state_dict())  # in place: callers hold module.model
        # its own snapshots decide which rows trained (the refit's random init elsewhere)
        untrained = _zero_untrained(module, refit_data, "the refit")
        if untrained is not None:
            extra["untrained_learner_id_rows_before_refit"] = extra["untrained_learner_id_rows"]
            extra["untrained_learner_id_rows"] = untrained
        refit_s = time.perf_counter() - start
    start = time.perf_counter()
    test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    test_s = time.perf_counter() - start
    test_per_user = getattr(module, "last_evaluation_", None)
    timings = {
        "fit": fit_s,
        "train_batches": timer.train_s,
        "validation": timer.validate_s,
        # evaluation (every validation + the test) against training (batches + refit)
        "evaluation_share_of_training": (timer.validate_s + test_s)
        / max(timer.train_s + refit_s, 1e-9),
        "refit": refit_s,
        "test": test_s,
        "train_learners_per_s": timer.learners / max(timer.train_s, 1e-9),
        "train_positives_per_s": timer.positives / max(timer.train_s, 1e-9),
        "seconds_per_epoch": timer.train_s / max(done["epochs_run"], 1),
    }
    csv = getattr(logger, "log_dir", None)
    metrics_csv = str(Path(csv) / "metrics.csv") if csv else None
    return TrainResult(
        best_epoch=best_epoch,
        best_score=done["best_model_score"],
        epochs_run=done["epochs_run"],
        valid={k: float(v) for k, v in valid.items()},
        test={k: float(v) for k, v in test.items()},
        timings=timings,
        checkpoint=done["best_model_path"],
        metrics_csv=metrics_csv,
        test_per_user=test_per_user,
        extra=extra,
    )


def evaluate(
    module: NCFModule,
    datamodule: NCFDataModule,
    stage: str,
    *,
    trainer_kwargs: dict[str, Any] | None = None,
) -> tuple[dict[str, float], RankingMetrics | None]:
    """`module`'s metrics on the validation (`stage="validate"`) or test snapshot
    (`"test"`), without training: (metrics, the per-learner values the test keeps). A
    Trainer of `trainer_kwargs` (the devices and precision of the fit) with no logger,
    checkpoint or callbacks; how a model fitted elsewhere (an ensemble of fitted members) is
    judged exactly as `fit_and_test` judges the model it fits."""
    if stage not in ("validate", "test"):
        raise ValueError(f"stage: 'validate' or 'test', got {stage!r}")
    kwargs = {"accelerator": "auto", "devices": 1, **(trainer_kwargs or {})}
    kwargs.update(logger=False, enable_checkpointing=False, enable_model_summary=False,
                  enable_progress_bar=False, callbacks=[])  # fmt: skip
    with expected_warnings_silenced():
        trainer = pl.Trainer(**kwargs)
        metrics = getattr(trainer, stage)(module, datamodule=datamodule, verbose=False)[0]
    per_user = getattr(module, "last_evaluation_", None) if stage == "test" else None
    return {k: float(v) for k, v in metrics.items()}, per_user


def _weight_averaging(
    callbacks: list[pl.Callback], ema_decay: float | None
) -> WeightAveraging | None:
    """The weight averaging of a fit: the `WeightAveraging` among the callbacks, or a new
    `EMAWeightAveraging(decay=ema_decay)`, or None; at most one (two would both swap their
    average in)."""
    given = [c for c in callbacks if isinstance(c, WeightAveraging)]
    if ema_decay is not None:
        if not 0.0 < float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay (ncf.ema_decay) must lie in (0, 1), got {ema_decay!r}")
        if given:
            raise ValueError(
                f"ema_decay={ema_decay} (ncf.ema_decay) and {type(given[0]).__name__} in the "
                "callbacks (trainer.callbacks) both average the weights: keep one (set "
                "ncf.ema_decay=null, or remove the callback)"
            )
        return EMAWeightAveraging(decay=float(ema_decay))
    if len(given) > 1:
        raise ValueError(
            f"{len(given)} weight-averaging callbacks ({[type(c).__name__ for c in given]}): "
            "each would swap its own average in for validation; keep one"
        )
    return given[0] if given else None


def _zero_untrained(module: NCFModule, datamodule: NCFDataModule, what: str) -> int | None:
    """`zero_untrained_id_rows` on the module's model with the learners `datamodule` trains
    (None: the model has no learner ID embeddings); logged."""
    model = module.model
    if model.learner_tower.ids is None:
        return None
    n = zero_untrained_id_rows(model, datamodule.trained_learners())
    _log.info(
        "%s: %d of %d learner ID rows set to zero (learners without a training row: their "
        "rows never trained; zero is the ID vector of a learner unknown to the model)",
        what, n, model.n_learners,
    )  # fmt: skip
    return n


def _the_one(callbacks: list[pl.Callback], kind: type, example: str) -> Any:
    found = [c for c in callbacks if isinstance(c, kind)]
    if len(found) != 1:
        raise ValueError(
            f"fit_and_test needs exactly one {kind.__name__} among the Trainer's callbacks "
            f"(trainer.callbacks), got {len(found)} of {[type(c).__name__ for c in callbacks]}; "
            f"keep one, e.g. {example}"
        )
    return found[0]
