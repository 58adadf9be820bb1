"""`NCFModule`: how the two-tower is trained and validated (Lightning).

One training step, top to bottom:
    L = learner tower(history bags [, ids])            # (B, d)
    courses(idx) = course tower(co-watch bags [, ids, content])  # (C, d), C = all or some
    loss = full_softmax | sampled_softmax | bce        # see ncf.losses
    [loss = (1 - w) loss + w distillation(teacher)]     # batches with a teacher, w > 0
    # distillation on the denoising input, on the whole history (the input at test), or both
Optimizer: Adam; optionally a cosine lr decay of fixed length (lr_decay_epochs).
Validation: full-ranking top-k over every course for the snapshot's learners with labels,
already-watched courses excluded, then `evaluation.ranking_metrics`: logs val_ndcg@k,
val_recall@k, ... which early stopping and checkpointing monitor. The test snapshot goes
through the same code (`trainer.test`), and only after the epoch was chosen on validation.

Data-parallel (DDP): a training batch is this rank's share of a global batch and its loss is
multiplied by the batch's `loss_scale` (`ncf.batches.shard_batch`: world size x this rank's
labelled rows / the global batch's), so for a loss that averages over learner rows
(`full_softmax`, the default) the averaged gradient is the global
batch's. `bce` and `sampled_softmax` average over label weights and sampled candidates, and
their in-batch candidates are each rank's own: under DDP their gradient is close to the
global batch's, not equal to it. Each rank evaluates its share of the learners; the top-k lists are
gathered on every rank before the metrics, so every rank logs the same numbers (computed
over all learners, never an average of per-rank metrics) and early stopping and
checkpointing choose the same epoch everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
import torch.distributed as dist

from evaluation import Factors, RankingMetrics, full_ranking_topk, ranking_metrics
from ncf.bags import Bags
from ncf.losses import LOSSES, bce_sampled, distillation, full_softmax, sampled_softmax
from ncf.model import TwoTower
from ncf.teacher import Teacher

__all__ = ["NCFModule", "DISTILL_INPUTS"]

DISTILL_INPUTS = ("denoised", "history", "both")

_CPU_ONLY_KEYS = (
    "seen",
    "truth",
    "loss_scale",
)  # scipy rows and the DDP loss scale stay on the host
_CACHED_KEYS = ("course_bags", "content", "teacher")  # same object every step: to the device once


def _mask(batch: dict[str, Any], known: str, inputs: str) -> Bags | None:
    """The courses a loss must not count as negatives: `batch[known]` when the batch has it
    (inputs plus courses watched before the lookback window), else the input bags."""
    bags = batch.get(known)
    return batch[inputs] if bags is None else bags


class NCFModule(pl.LightningModule):
    """Trains a `TwoTower`.

    loss: "full_softmax" | "sampled_softmax" | "bce" (ncf.losses).
    n_negatives / negative_alpha: bce negatives per positive, drawn with prob ~ popularity^alpha
      (alpha 0 = uniform); extra_negatives: uniform extras for sampled_softmax.
    course_popularity: (n_courses,) training counts, for popularity negatives and logQ.
    distill_weight / distill_temperature: w and T of the distillation term on batches that
      carry a teacher (`ncf.teacher`, built by the datamodule when its teacher_l2 is set).
    distill_inputs: what the learner tower reads for that term: "denoised" (the step's input
      courses), "history" (the learner's whole history, as at evaluation; costs one more
      learner-tower pass) or "both" (the mean of the two terms).
    distill_standardize: standardize the teacher's scores per learner before the temperature
      (`ncf.losses.standardize_scores`); T is then in units of each learner's spread.
    lr_decay_epochs / lr_final_ratio: cosine decay of the lr to lr * ratio over that many
      epochs, then flat (None: constant). Its length does not depend on the trainer's
      max_epochs, so the refit for a chosen epoch count sees the same lrs.
    eval_ks: cut-offs of the validation/test metrics; monitor: the metric checkpointing and
      early stopping watch (a key of the logged metrics, e.g. "val_ndcg@10").
    """

    def __init__(
        self,
        model: TwoTower,
        *,
        loss: str = "full_softmax",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        n_negatives: int = 4,
        negative_alpha: float = 0.0,
        extra_negatives: int = 0,
        course_popularity: np.ndarray | None = None,
        eval_ks: tuple[int, ...] = (10,),
        seed: int = 0,
        distill_weight: float = 0.0,
        distill_temperature: float = 0.05,
        distill_inputs: str = "denoised",
        distill_standardize: bool = False,
        lr_decay_epochs: int | None = None,
        lr_final_ratio: float = 0.01,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss: must be one of {LOSSES}, got {loss!r}")
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f"distill_weight: must be in [0, 1], got {distill_weight!r}")
        if not distill_temperature > 0:
            raise ValueError(f"distill_temperature: must be > 0, got {distill_temperature!r}")
        self.model = model
        self.loss_kind, self.lr, self.weight_decay = loss, lr, weight_decay
        self.n_negatives, self.negative_alpha = n_negatives, negative_alpha
        self.extra_negatives = extra_negatives
        self.eval_ks = tuple(int(k) for k in eval_ks)
        self.seed = seed
        if distill_inputs not in DISTILL_INPUTS:
            raise ValueError(
                f"distill_inputs: must be one of {DISTILL_INPUTS}, got {distill_inputs!r}"
            )
        self.distill_weight, self.distill_temperature = distill_weight, distill_temperature
        self.distill_inputs, self.distill_standardize = distill_inputs, bool(distill_standardize)
        if lr_decay_epochs is not None and lr_decay_epochs < 1:
            raise ValueError(f"lr_decay_epochs: must be >= 1 or None, got {lr_decay_epochs!r}")
        if not 0.0 <= lr_final_ratio <= 1.0:
            raise ValueError(f"lr_final_ratio: must be in [0, 1], got {lr_final_ratio!r}")
        self.lr_decay_epochs, self.lr_final_ratio = lr_decay_epochs, lr_final_ratio
        pop = (
            np.ones(model.n_courses)
            if course_popularity is None
            else np.asarray(course_popularity, dtype=np.float64)
        )
        if pop.shape != (model.n_courses,) or (pop < 0).any():
            raise ValueError(
                f"course_popularity: expected ({model.n_courses},) counts >= 0, got {pop.shape}"
            )
        share = (pop + 1.0) / (pop + 1.0).sum()  # +1: a never-seen course keeps a finite log q
        self.register_buffer("log_q", torch.from_numpy(np.log(share)).float(), persistent=False)
        neg = share**negative_alpha if negative_alpha else np.ones_like(share)
        self.register_buffer(
            "negative_probs", torch.from_numpy(neg / neg.sum()).float(), persistent=False
        )
        self.save_hyperparameters(ignore=["model", "course_popularity"])
        self._device_cache: dict[str, Bags] = {}
        self._eval: dict[str, list] = {}
        self._generator: torch.Generator | None = None

    # ---- device handling -------------------------------------------------------------------
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        out = {}
        for key, value in batch.items():
            if key in _CPU_ONLY_KEYS or value is None:
                out[key] = value
            elif key in _CACHED_KEYS:
                out[key] = self._cached(value, device)
            else:
                out[key] = value.to(device)
        return out

    def _cached(self, bags: Bags | Teacher, device: torch.device) -> Bags | Teacher:
        key = f"{bags.key}@{device}"
        if key not in self._device_cache:
            self._device_cache[key] = bags.to(device)
        return self._device_cache[key]

    def _gen(self) -> torch.Generator:
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(self.seed)
            restored = getattr(self, "_restored_generator", None)
            if restored is not None:  # resumed from a checkpoint (on_load_checkpoint)
                self._generator.set_state(restored)
                self._restored_generator = None
        return self._generator

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The negative sampler's generator: a resumed fit draws what an uninterrupted one would.
        if self._generator is not None:
            checkpoint["ncf_generator"] = self._generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_generator = checkpoint.get("ncf_generator")
        self._generator = None

    # ---- forward pieces --------------------------------------------------------------------
    def learner_embeddings(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model.learners(batch["history"], batch["learners"])

    def course_embeddings(self, batch: dict[str, Any], idx: torch.Tensor | None) -> torch.Tensor:
        """(C, d) for courses `idx` (None: all), from this batch's snapshot inputs."""
        if idx is None:
            idx = torch.arange(self.model.n_courses, device=self.device)
            return self.model.courses(batch["course_bags"], idx, batch["content"])
        content = None if batch["content"] is None else batch["content"].rows(idx)
        return self.model.courses(batch["course_bags"].rows(idx), idx, content)

    # ---- training --------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if self.distill_weight and getattr(dm, "teacher_l2", None) is None:
            raise ValueError(
                "distill_weight > 0 needs a teacher: set the datamodule's teacher_l2 "
                "(e.g. ncf.datamodule.teacher_l2=500)"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        scale = batch.get("loss_scale")  # data-parallel share of a global batch (or None)
        if scale is not None and scale == 0:
            # Nothing of this rank counts in the global batch's loss, but DDP needs its
            # backward pass: a zero that reaches every parameter (zero gradients).
            return sum(p.sum() for p in self.parameters()) * 0.0
        L = self.learner_embeddings(batch)  # (B, d)
        every_course: list[torch.Tensor] = []  # the course tower runs over all courses once

        def courses(idx: torch.Tensor | None) -> torch.Tensor:
            if idx is not None:
                return self.course_embeddings(batch, idx)
            if not every_course:
                every_course.append(self.course_embeddings(batch, None))  # (n_courses, d)
            return every_course[0]

        labels = batch["labels"]
        known = _mask(batch, "known", "history")  # no negatives: inputs (+ older watches)
        if self.loss_kind == "full_softmax":
            loss = full_softmax(L, courses, self.model, labels, known)
        elif self.loss_kind == "sampled_softmax":
            loss = sampled_softmax(
                L, courses, self.model, labels, known,
                log_q=self.log_q, n_courses=self.model.n_courses,
                extra_negatives=self.extra_negatives, generator=self._gen(),
            )  # fmt: skip
        else:
            loss = bce_sampled(
                L, courses, self.model, labels, known,
                negative_probs=self.negative_probs, n_negatives=self.n_negatives,
                n_courses=self.model.n_courses, generator=self._gen(),
            )  # fmt: skip
        teacher = batch.get("teacher")
        if self.distill_weight and teacher is not None:
            w = self.distill_weight
            soft = self._distillation(batch, L, courses, teacher)
            self.log("train_distill", soft, on_step=False, on_epoch=True, batch_size=L.shape[0])
            loss = (1 - w) * loss + w * soft
        # this rank's own mean loss (under DDP: rank 0's share, not the global batch's)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=L.shape[0])
        return loss if scale is None else loss * scale

    def _distillation(self, batch, L, courses, teacher) -> torch.Tensor:
        """The distillation term on the denoising input, on the whole history (the learner
        tower's input at evaluation), or the mean of both."""
        terms = []
        if self.distill_inputs in ("denoised", "both"):
            history = batch["history"]
            terms.append(distillation(
                L, courses, self.model, teacher.scores(history), _mask(batch, "known", "history"),
                temperature=self.distill_temperature, standardize=self.distill_standardize,
            ))  # fmt: skip
        if self.distill_inputs in ("history", "both"):
            full = batch["full_history"]
            L_full = self.model.learners(full, batch["learners"])  # (B, d)
            terms.append(distillation(
                L_full, courses, self.model, teacher.scores(full),
                _mask(batch, "known_full", "full_history"),
                temperature=self.distill_temperature, standardize=self.distill_standardize,
            ))  # fmt: skip
        return sum(terms) / len(terms)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_decay_epochs is None:
            return optimizer
        # Cosine from lr to lr * lr_final_ratio over lr_decay_epochs, then flat. Its length is
        # fixed (not the trainer's max_epochs), so a refit for the epoch count chosen on
        # validation follows the same learning rates epoch by epoch.
        T, floor = self.lr_decay_epochs, self.lr_final_ratio

        def factor(epoch: int) -> float:
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(epoch, T) / T))

        return {
            "optimizer": optimizer,
            "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor),
        }

    # ---- validation and test: full ranking ------------------------------------------------
    def _eval_step(self, batch: dict[str, Any]) -> None:
        L = self.learner_embeddings(batch)  # (B, d)
        key = batch["course_bags"].key
        if key not in self._eval["courses"]:
            self._eval["courses"][key] = self.course_embeddings(batch, None)  # (n_courses, d)
        # TwoTower.score is this product (over the temperature for cosine: the same order, up
        # to ties the division could make); as Factors the CPU ranks it block by block without
        # the (B, n_courses) scores
        factors = Factors(self.model.normalize(L), self.model.normalize(self._eval["courses"][key]))
        topk = full_ranking_topk(factors, max(self.eval_ks), exclude=batch["seen"], device=L.device)
        self._eval["topk"].append(topk)
        self._eval["truth"].append(batch["truth"])
        self._eval["learners"].append(batch["learners"].cpu().numpy())

    def _eval_start(self) -> None:
        self._eval = {"courses": {}, "topk": [], "truth": [], "learners": []}

    def _gather_eval(self) -> tuple[list, list, list]:
        """(topk, truth, learners) chunks of every rank, in learner order (as one process
        evaluates them: ascending), so the metrics equal a single process's."""
        parts = (self._eval["topk"], self._eval["truth"], self._eval["learners"])
        trainer = self._trainer  # None outside a Trainer
        if trainer is None or trainer.world_size == 1 or not dist.is_initialized():
            return parts
        gathered: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(gathered, parts)
        topk, truth, learners = ([c for g in gathered for c in g[i]] for i in range(3))
        if not learners:
            return [], [], []
        order = np.argsort(np.concatenate(learners), kind="stable")
        return (
            [np.concatenate(topk)[order]],
            [sp.vstack(truth).tocsr()[order]],
            [np.concatenate(learners)[order]],
        )

    def _eval_end(self, prefix: str) -> dict[str, float]:
        topk, truth, learners = self._gather_eval()  # every rank takes part, even with none
        if not topk:
            return {}
        res = ranking_metrics(np.concatenate(topk), sp.vstack(truth).tocsr(), self.eval_ks)
        # per-user metrics of this evaluation, `users` = learner indices (for paired tests)
        learners = np.concatenate(learners)  # (n_evaluated,) row -> learner
        self.last_evaluation_: RankingMetrics = dataclasses.replace(res, users=learners[res.users])
        metrics = {f"{prefix}_{k}": float(v) for k, v in res.summary().items() if "@" in k}
        k = max(self.eval_ks)
        for name, value in metrics.items():
            self.log(name, value, prog_bar=name == f"{prefix}_ndcg@{k}")
        self._eval = {}
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
