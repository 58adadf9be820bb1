"""`NCFDataModule`: snapshots for training, validation and test, from a `watchlog` split.

Temporal splits (the platform): training snapshots at `n_cutoffs` rolling cutoffs before the
validation cutoff (`watchlog.splits.rolling_folds`), each with labels in the following
`horizon_days`; validation = the split's validation fold; test = the test fold. Every fold is
leakage-checked when built. By default ("auto") the history at the validation cutoff is also
trained on by denoising (see below): it is input-side data only, its labels never enter.

Random and stratified splits (published setups): there is no cutoff, so the model trains by
denoising: each epoch a `label_fraction` of every learner's training courses are labels and
the rest input. Validation labels are the split's validation pairs, with the training pairs
as input; test labels the test pairs, with training + validation pairs as input.

Under data-parallel training (a Lightning DDP trainer) every rank builds the same snapshots
(same data, same seed), yields its share of each global training batch (`ncf.batches`) and
evaluates every world_size-th learner; `NCFModule` gathers the shares before the metrics.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import scipy.sparse as sp
from torch.utils.data import DataLoader

from ncf.batches import EvalBatches, TrainBatches, trained_learners
from ncf.inputs import InputBuilder, Snapshot
from ncf.teacher import Teacher, TeacherChoice, choose_teacher_l2, fit_teacher
from watchlog import DataReport, EventLog
from watchlog.progress import progress
from watchlog.splits import Split, rolling_folds

__all__ = ["NCFDataModule"]

_log = logging.getLogger(__name__)

TRAININGS = ("auto", "rolling", "denoising", "rolling+denoising")


class NCFDataModule(pl.LightningDataModule):
    """Builds the snapshots once (`setup`) and serves learner batches.

    log, split: the cleaned `EventLog` and its `Split` (runtime objects, passed in code).
    inputs: the `InputBuilder` (lookback, weights, co-watch) used for every snapshot.
    training: "auto" (rolling+denoising for temporal splits, denoising otherwise), "rolling",
      "denoising", or "rolling+denoising" (temporal: the rolling snapshots plus a denoising
      pass over the history at the evaluation cutoff, so every learner's history also teaches).
    n_cutoffs / horizon_days / spacing_days: the rolling training cutoffs; horizon defaults to
      the validation window's length.
    content: optional (n_courses, n_features) CSR of course content for the course tower.
    teacher_l2: when set, every denoising snapshot gets a distillation teacher, EASE with this
      L2 fitted on that snapshot's history (`ncf.teacher`); the module's distill_weight uses it.
      A list: the value whose teacher ranks the validation snapshot best (NDCG@10), chosen
      once on validation (`ncf.teacher.choose_teacher_l2`) and kept by the refit;
      `teacher_choice()` says which and every value's score.
    teacher_rank: the teacher's Gram matrix as diagonal plus this rank (memory linear in
      courses); None: dense EASE (n_courses^2 floats, for catalogues up to ~10,000 courses).
    """

    def __init__(
        self,
        log: EventLog,
        split: Split,
        inputs: InputBuilder,
        *,
        training: str = "auto",
        n_cutoffs: int = 4,
        horizon_days: float | None = None,
        spacing_days: float | None = None,
        label_fraction: float = 0.5,
        normalize: str = "mean",
        batch_size: int = 64,
        eval_batch_size: int = 1024,
        seed: int = 0,
        content: sp.csr_matrix | None = None,
        report: DataReport | None = None,
        teacher_l2: float | Sequence[float] | None = None,
        teacher_rank: int | None = 256,
    ):
        super().__init__()
        if training not in TRAININGS:
            raise ValueError(f"training: must be one of {TRAININGS}, got {training!r}")
        if split.valid is None:
            raise ValueError(
                "split: NCF training needs a validation fold (the epoch is chosen on it, never on test)"
            )
        self.event_log, self.split, self.inputs = log, split, inputs
        self.training = training
        if training == "auto":
            self.training = "rolling+denoising" if split.kind == "temporal" else "denoising"
        if self.training.startswith("rolling") and split.kind != "temporal":
            raise ValueError(f"training={training!r} needs a temporal split, got {split.kind!r}")
        self.n_cutoffs, self.horizon_days, self.spacing_days = n_cutoffs, horizon_days, spacing_days
        self.label_fraction, self.normalize = label_fraction, normalize
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.content, self.teacher_l2, self.teacher_rank = content, teacher_l2, teacher_rank
        self._teacher_choice: TeacherChoice | None = None
        self.report = report if report is not None else DataReport()
        self.train_snapshots: list[Snapshot] = []
        self.valid: Snapshot | None = None
        self.test: Snapshot | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.valid is not None:
            return  # built once; Lightning calls setup for every stage
        self.valid = self.inputs.snapshot(self.event_log, self.split.valid, report=self.report)
        self.test = self.inputs.snapshot(self.event_log, self.split.test, report=self.report)
        if (
            self.valid.labels is not None and self.valid.labels.nnz == 0
        ):  # nothing to choose an epoch on: say why, not later
            watched = int(self.event_log.events["watched"].sum()) if (
                "watched" in self.event_log.events) else None  # fmt: skip
            raise ValueError(
                f"NCF: the validation window ({self.split.valid.name}) holds no watched course "
                f"to learn or choose an epoch from; the log has {watched} watched events in "
                "all. A watch is an event with watch_seconds >= data.cleaning.min_watch_seconds "
                "(a log without watch times: fill data.source.events.fill.watch_seconds=600; a "
                "log of counts: lower min_watch_seconds)"
            )
        self.train_snapshots = self._training_snapshots(before=self.split.valid)

    def _training_snapshots(self, before) -> list[Snapshot]:
        """What the model trains on when `before` (a fold) is the next evaluation point.

        Denoising snapshots come last (`denoise_flags`)."""
        # Denoising trains on `before`'s inputs only; its labels are never trained on.
        at_cutoff = [self.valid if before is self.split.valid else self.test]
        if self.training == "denoising":
            return at_cutoff
        horizon = self.horizon_days
        if horizon is None:
            horizon = (self.split.test.cutoff - self.split.valid.cutoff) / pd.Timedelta(days=1)
        try:
            folds = rolling_folds(
                self.event_log,
                before=before.cutoff,
                n_cutoffs=self.n_cutoffs,
                horizon_days=horizon,
                spacing_days=self.spacing_days,
                events=before.inputs,
            )
        except ValueError as err:  # say which settings (and config keys) to change
            raise ValueError(
                f"training snapshots before the {before.name} cutoff: {err}. Settings: "
                f"n_cutoffs={self.n_cutoffs}, horizon_days={horizon:g}, spacing_days="
                f"{self.spacing_days} (config ncf.datamodule.n_cutoffs / horizon_days / "
                "spacing_days; training=denoising needs no cutoffs)"
            ) from None
        if before is self.split.test:
            folds = [replace(f, name=f"refit_{f.name}") for f in folds]
        folds = progress(folds, desc="training snapshots (history, co-watch, labels)",
                         unit="snapshots", logger=_log)  # fmt: skip
        rolling = [self.inputs.snapshot(self.event_log, f, report=self.report) for f in folds]
        return rolling + (at_cutoff if self.training == "rolling+denoising" else [])

    def denoise_flags(self, snapshots: list[Snapshot]) -> list[bool]:
        """Which training snapshots are denoised: all (denoising), none (rolling), the last
        one (rolling+denoising)."""
        if self.training == "denoising":
            return [True] * len(snapshots)
        if self.training == "rolling":
            return [False] * len(snapshots)
        return [False] * (len(snapshots) - 1) + [True]

    def for_refit(self) -> NCFDataModule:
        """The same data, training moved forward to the test cutoff: rolling cutoffs before it
        (so the newest labels are the validation window) or denoising on training +
        validation pairs. Used to refit with the epoch count chosen on validation; it has no
        validation of its own, and the same test snapshot."""
        self.setup()
        self.teacher_choice()  # on validation, before the copy: the refit keeps it
        out = copy.copy(self)
        out.train_snapshots = self._training_snapshots(before=self.split.test)
        return out

    def reseeded(self, seed: int) -> NCFDataModule:
        """The same snapshots and teacher (its L2 chosen once, on validation), another seed:
        the batches' order and label draws follow `seed` (and the sketches of teachers fitted
        later, the refit's). An ensemble's members each train on one (`experiments.train_ncf`).
        Call it before a fit: the copy starts with no epochs drawn and no trainer."""
        self.setup()
        self.teacher_choice()
        out = copy.copy(self)
        out.seed, out.trainer = int(seed), None
        for state in ("_train_batches", "_resume_epoch", "_teachers"):
            out.__dict__.pop(state, None)  # drawn, and fitted, afresh by the copy
        return out

    def trained_learners(self) -> np.ndarray:
        """(n_learners,) bool: learners with a training row in this module's training
        snapshots (`ncf.batches.trained_learners`): the learners whose ID rows, if the model
        has learner ID embeddings, the fit trains. The refit's copy (`for_refit`) answers for
        its own snapshots."""
        self.setup()
        return trained_learners(self.train_snapshots, self.denoise_flags(self.train_snapshots))

    def course_popularity(self) -> np.ndarray:
        """(n_courses,) training label counts (rolling) or training-history counts (denoising)."""
        self.setup()
        flags = self.denoise_flags(self.train_snapshots)
        mats = [
            (s.history if d else s.labels) for s, d in zip(self.train_snapshots, flags, strict=True)
        ]
        return np.asarray(sum((m > 0).sum(axis=0) for m in mats), dtype=np.float64).ravel()

    @property
    def n_content_features(self) -> int:
        return 0 if self.content is None else int(self.content.shape[1])

    def _rank(self) -> tuple[int, int]:
        """(rank, world_size) of the trainer this module serves; (0, 1) outside Lightning."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        data = TrainBatches(
            self.train_snapshots,
            batch_size=self.batch_size,
            seed=self.seed,
            normalize=self.normalize,
            denoise=self.denoise_flags(self.train_snapshots),
            label_fraction=self.label_fraction,
            content=self.content,
            teachers=self.teachers(),
            rank=rank,
            world_size=world_size,
        )
        # A resumed fit draws the epochs after those its checkpoint had drawn (load_state_dict).
        data.epoch, self._resume_epoch = getattr(self, "_resume_epoch", 0), 0
        self._train_batches = data
        return DataLoader(data, batch_size=None)  # the dataset yields whole batches

    def state_dict(self) -> dict[str, int]:
        """Saved in Lightning checkpoints: how many training epochs were drawn, since the
        batches of an epoch are a function of (seed, epoch)."""
        batches = getattr(self, "_train_batches", None)
        return {} if batches is None else {"train_epochs_drawn": int(batches.epoch)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_epoch = int(state.get("train_epochs_drawn", 0))

    def teachers(self) -> list[Teacher | None]:
        """One teacher per training snapshot: EASE on its history for denoising snapshots
        (their labels come from that history), None for rolling ones and without teacher_l2.

        Fitted once per training snapshot and setting (the snapshots themselves, L2, rank,
        seed): `train_dataloader` runs again at every reload (Lightning's
        `reload_dataloaders_every_n_epochs`), and each run refitted every teacher, a
        randomized SVD (or dense inverse) of the same history per epoch."""
        self.setup()
        flags = self.denoise_flags(self.train_snapshots)
        choice = self.teacher_choice()
        if choice is None:
            return [None] * len(flags)
        snapshots, settings = tuple(self.train_snapshots), (choice.l2, self.teacher_rank, self.seed)
        cached = getattr(self, "_teachers", None)  # (snapshots, settings, teachers)
        if (
            cached is not None
            and len(cached[0]) == len(snapshots)
            and all(a is b for a, b in zip(cached[0], snapshots, strict=True))
            and cached[1] == settings
        ):
            return list(cached[2])  # the refit's copy (for_refit) has other snapshots: refitted
        teachers = [
            None if not d
            else choice.teacher if s is self.valid and choice.teacher is not None  # already fitted
            else fit_teacher(s, choice.l2, rank=self.teacher_rank, seed=self.seed)
            for s, d in zip(snapshots, flags, strict=True)
        ]  # fmt: skip
        self._teachers = (snapshots, settings, teachers)
        return list(teachers)

    def teacher_choice(self) -> TeacherChoice | None:
        """The teacher's L2 (None: no teacher): `teacher_l2` itself, or from a list the value
        chosen on the validation snapshot, once (the refit's copy keeps it, so test labels
        never choose it)."""
        if self.teacher_l2 is None:
            return None
        if self._teacher_choice is None:
            if isinstance(self.teacher_l2, int | float):
                self._teacher_choice = TeacherChoice(float(self.teacher_l2), {})
            else:
                self.setup()
                self._teacher_choice = choose_teacher_l2(
                    self.valid, list(self.teacher_l2), rank=self.teacher_rank, seed=self.seed
                )
                tried = ", ".join(
                    f"{l2:g}: {ndcg:.4f}" for l2, ndcg in self._teacher_choice.valid_ndcg.items()
                )
                _log.info("teacher L2 %g chosen on validation (NDCG@10 by L2: %s)",
                          self._teacher_choice.l2, tried)  # fmt: skip
        return self._teacher_choice

    def _eval_loader(self, snap: Snapshot) -> DataLoader:
        rank, world_size = self._rank()
        learners = None  # all of the snapshot's learners with labels
        if world_size > 1:  # strided shares: balanced, gathered back in learner order
            learners = snap.label_learners()[rank::world_size]
        data = EvalBatches(
            snap, batch_size=self.eval_batch_size, normalize=self.normalize,
            learners=learners, content=self.content,
        )  # fmt: skip
        return DataLoader(data, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.valid)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test)
