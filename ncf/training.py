"""Fit on validation, then test once: the loop every NCF run (experiment or benchmark) uses.

    result = fit_and_test(datamodule, module, out_dir, callbacks=[...], trainer_kwargs={...})

1. `Trainer.fit` with the given callbacks (the experiments build them from `trainer.callbacks`;
   `default_callbacks` otherwise): a `PhaseTimer`, a `ModelCheckpoint` on the validation
   metric (`monitor`, default val_ndcg@10) and usually `EarlyStopping` on it: the epoch is
   chosen on validation, never on test.
2. The best checkpoint's weights are loaded back (`torch.load(..., weights_only=True)`).
3. `Trainer.test` on the test snapshot, once.
Wall time is split into training batches and validation (`PhaseTimer`), so a run can show
that evaluation stays a small part of training.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from evaluation import RankingMetrics
from ncf.datamodule import NCFDataModule
from ncf.module import NCFModule

__all__ = ["PhaseTimer", "TrainResult", "default_callbacks", "fit_and_test"]

# Lightning warnings that do not apply here, silenced so real ones stand out:
# our IterableDatasets run in the main process (no workers to split them), and overriding
# transfer_batch_to_device in the module (to keep scipy rows on the host and cache the
# course bags on the device) is deliberate.
for _message in (
    r".*IterableDataset.*has `__len__` defined",
    r"You have overridden `transfer_batch_to_device`",
    r".*isinstance\(treespec, LeafSpec\)",
    r".*litlogger",
):
    warnings.filterwarnings("ignore", message=_message)


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
    best_epoch: int
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
            auto_insert_metric_name=False,
        ),
        EarlyStopping(monitor=monitor, mode="max", patience=patience),
    ]  # fmt: skip


def fit_and_test(
    datamodule: NCFDataModule,
    module: NCFModule,
    out_dir: str | Path,
    *,
    monitor: str = "val_ndcg@10",
    patience: int = 5,
    trainer_kwargs: dict[str, Any] | None = None,
    refit: bool = False,
    callbacks: Sequence[pl.Callback] | None = None,
) -> TrainResult:
    """Fit with early stopping on `monitor` (max), reload the best weights, test once.

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
    """
    out_dir = Path(out_dir)
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
    if "callbacks" in (trainer_kwargs or {}):
        raise TypeError("pass the callbacks as callbacks=, not in trainer_kwargs")
    kwargs = {
        "accelerator": "auto", "devices": 1, "max_epochs": 50, "num_sanity_val_steps": 0,
        "enable_model_summary": False, "log_every_n_steps": 1,
        **(trainer_kwargs or {}),
    }  # fmt: skip
    logger = kwargs.pop("logger", None)
    if logger is None:
        logger = CSVLogger(out_dir, name="logs", version="")
    trainer = pl.Trainer(logger=logger, callbacks=callbacks, **kwargs)

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    if not checkpoint.best_model_path:
        raise RuntimeError(f"no checkpoint was saved: was {monitor!r} ever logged?")
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    # The best checkpoint's validation metrics, recomputed on the reloaded weights.
    valid = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    best_epoch = int(state.get("epoch", -1))
    refit_s = 0.0
    if refit:
        start = time.perf_counter()
        # Reseed: the refit's dropout draws then depend on the seed alone, not on how many
        # epochs (and RNG draws) the first fit happened to run before early stopping.
        pl.seed_everything(module.seed, workers=True, verbose=False)
        again = pl.Trainer(
            **{**kwargs, "max_epochs": best_epoch + 1, "limit_val_batches": 0},
            logger=False, enable_checkpointing=False,
        )  # fmt: skip
        again.fit(initial, datamodule=datamodule.for_refit())
        module.load_state_dict(initial.state_dict())  # in place: callers hold module.model
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
        "seconds_per_epoch": timer.train_s / max(trainer.current_epoch, 1),
    }
    csv = getattr(logger, "log_dir", None)
    metrics_csv = str(Path(csv) / "metrics.csv") if csv else None
    return TrainResult(
        best_epoch=best_epoch,
        best_score=float(checkpoint.best_model_score),
        epochs_run=int(trainer.current_epoch),
        valid={k: float(v) for k, v in valid.items()},
        test={k: float(v) for k, v in test.items()},
        timings=timings,
        checkpoint=checkpoint.best_model_path,
        metrics_csv=metrics_csv,
        test_per_user=test_per_user,
    )


def _the_one(callbacks: list[pl.Callback], kind: type, example: str) -> Any:
    found = [c for c in callbacks if isinstance(c, kind)]
    if len(found) != 1:
        raise ValueError(
            f"fit_and_test needs exactly one {kind.__name__} among the Trainer's callbacks "
            f"(trainer.callbacks), got {len(found)} of {[type(c).__name__ for c in callbacks]}; "
            f"keep one, e.g. {example}"
        )
    return found[0]
