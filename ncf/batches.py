"""Batches of learners for training and evaluation (iterable datasets, built on the CPU).

A training batch is B learners of one snapshot (one cutoff), so all of them share the same
course bags:

    learners     (B,) int64            learner indices
    history      Bags, B bags          learner tower input (row-normalized weights)
    labels       Bags, B bags          positives (weights = label weights)
    course_bags  Bags, n_courses bags  course tower input of this snapshot (cached on device)
    content      Bags | None           course content features (cached on device)
    teacher      Teacher | None        distillation teacher of this snapshot (cached on device)
    known        Bags | None           courses that are no negative: the history bag's plus
                                       those watched before the lookback window (`older`);
                                       None when there are none of the latter (the history
                                       bag is the mask)
    known_full   Bags | None           the same for `full_history` (distillation on it)

Evaluation batches carry `seen` and `truth` as scipy CSR rows (for exclusion and metrics)
instead of labels. The order of learners and batches is a function of (seed, epoch) only.

Data-parallel training (DDP, `world_size` > 1): every rank draws the same plan of global
batches and takes its contiguous share of each (`shard_batch`), so one optimizer step on W
ranks sees the same B learners as one step of one process. The batch then also carries

    loss_scale   float             W x this share's counted rows / the global batch's
                                   (DDP averages gradients over ranks: see `shard_batch`)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import IterableDataset

from ncf.bags import Bags, csr_bags
from ncf.inputs import Snapshot, normalize_rows, pattern, split_history
from ncf.teacher import Teacher

__all__ = [
    "TrainBatches", "EvalBatches", "shard_batch", "trained_learners", "training_rows", "older",
]  # fmt: skip


def training_rows(snapshot: Snapshot, denoise: bool) -> np.ndarray:
    """(k,) int64 learner indices of `snapshot` that get a training row: those with labels
    (or, denoised, with a history to draw labels from)."""
    m = snapshot.history if denoise else snapshot.labels
    return np.flatnonzero(np.diff(m.indptr) > 0)


def older(snapshot: Snapshot) -> sp.csr_matrix | None:
    """(n_learners, n_courses) binary CSR: courses each learner watched before the cutoff but
    outside the lookback window (in `seen`, not in `history`), or None when there are none.

    Evaluation removes everything seen from the ranking, so these courses are never
    candidates there; training must not teach the model to rank them low either (they are
    masked like the history, not counted as negatives)."""
    seen, history = pattern(snapshot.seen), pattern(snapshot.history)
    out = (seen - seen.multiply(history)).tocsr()
    out.eliminate_zeros()
    return out if out.nnz else None


def _known_bags(
    inputs: sp.csr_matrix, old: sp.csr_matrix | None, learners: np.ndarray
) -> Bags | None:
    """Bags of `learners`' input courses plus their `older` ones (None when `old` is None)."""
    if old is None:
        return None
    rows = np.asarray(learners, dtype=np.int64)
    both = (pattern(inputs[rows]) + old[rows]).tocsr()  # disjoint: old is outside the history
    return csr_bags(both)


def trained_learners(snapshots: Sequence[Snapshot], denoise: Sequence[bool]) -> np.ndarray:
    """(n_learners,) bool: learners with a training row in any of `snapshots` (the union of
    `training_rows`); the others' learner ID rows never get a gradient from the loss."""
    if not snapshots:
        raise ValueError("trained_learners: no training snapshots")
    out = np.zeros(snapshots[0].history.shape[0], dtype=bool)
    for snap, d in zip(snapshots, denoise, strict=True):
        out[training_rows(snap, d)] = True
    return out


def shard_batch(
    learners: np.ndarray, counted: np.ndarray, rank: int, world_size: int
) -> tuple[np.ndarray, float]:
    """This rank's share of a global batch, and the factor its mean loss is multiplied by.

    learners: (B,) the global batch; counted: (B,) bool, the rows the loss averages over
    (learners with labels: `full_softmax` and `distillation` are means over them).
    Shares are contiguous and differ in size by at most one (`np.array_split`).
    DDP averages the ranks' gradients, so with scale_r = W * n_r / N (n_r counted rows here,
    N in the global batch) the step's gradient is (1/W) sum_r scale_r grad(mean_r) =
    grad(sum of the N row losses / N): the global batch's mean, as in one process. A share
    with no counted row gets scale 0 (it still takes part in the step with a zero gradient,
    since every rank must run the same number of backward passes).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: must be in 0..{world_size - 1}, got {rank}")
    counted = np.asarray(counted, dtype=bool)
    if counted.shape != learners.shape:
        raise ValueError(f"counted: expected shape {learners.shape}, got {counted.shape}")
    mine = np.array_split(np.arange(len(learners)), world_size)[rank]
    total = int(counted.sum())
    scale = world_size * int(counted[mine].sum()) / total if total else 0.0
    return learners[mine], float(scale)


class TrainBatches(IterableDataset):
    """Shuffled learner batches over one or more snapshots, re-drawn every epoch.

    denoise: one flag per snapshot (default: none). False = the snapshot's labels are the
    labels (courses watched after its cutoff); True = each epoch, `label_fraction` of every
    learner's history becomes labels and the rest input (denoising: random splits, where
    there is no cutoff, or as extra training signal from the history itself).
    teachers: one `ncf.teacher.Teacher` or None per snapshot (default: none).
    rank / world_size: data-parallel training: this process yields its share of every global
      batch of `batch_size` learners (`shard_batch`), with the batch's `loss_scale`.
    """

    def __init__(
        self,
        snapshots: Sequence[Snapshot],
        *,
        batch_size: int,
        seed: int,
        normalize: str = "mean",
        denoise: Sequence[bool] | None = None,
        label_fraction: float = 0.5,
        content: sp.csr_matrix | None = None,
        teachers: Sequence[Teacher | None] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank, world_size: need 0 <= rank < world_size, got {rank}, {world_size}"
            )
        self.rank, self.world_size = rank, world_size
        self.snapshots = list(snapshots)
        self.batch_size, self.seed, self.normalize = batch_size, seed, normalize
        self.denoise = [False] * len(self.snapshots) if denoise is None else list(denoise)
        if len(self.denoise) != len(self.snapshots):
            raise ValueError(
                f"denoise: one flag per snapshot, got {len(self.denoise)} for {len(self.snapshots)}"
            )
        self.teachers = [None] * len(self.snapshots) if teachers is None else list(teachers)
        if len(self.teachers) != len(self.snapshots):
            raise ValueError(
                f"teachers: one per snapshot, got {len(self.teachers)} for {len(self.snapshots)}"
            )
        self.label_fraction = label_fraction
        self.content = None if content is None else csr_bags(content, key="content")
        self.course_bags = [csr_bags(s.course_bags, key=f"course_bags/{s.name}") for s in snapshots]
        self.older = [older(s) for s in self.snapshots]  # None where the lookback covers all
        self.epoch = 0
        for s, d in zip(self.snapshots, self.denoise, strict=True):
            if not d and s.labels is None:
                raise ValueError(f"snapshot {s.name!r} has no labels to train on")

    def _learners(self, i: int) -> np.ndarray:
        return training_rows(self.snapshots[i], self.denoise[i])

    def trained_learners(self) -> np.ndarray:
        """(n_learners,) bool: learners with a training row in any snapshot."""
        return trained_learners(self.snapshots, self.denoise)

    def __len__(self) -> int:
        return sum(
            -(-len(self._learners(i)) // self.batch_size) for i in range(len(self.snapshots))
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        plan = []  # (snapshot number, learners of the batch)
        views = []
        for i, snap in enumerate(self.snapshots):
            if self.denoise[i]:
                inputs, labels = split_history(snap.history, self.label_fraction, rng)
                labels.data[:] = 1.0
            else:
                inputs, labels = snap.history, snap.labels
            full = (
                normalize_rows(snap.history, self.normalize)
                if self.teachers[i] is not None
                else None
            )  # the whole history: what the learner tower sees at evaluation
            views.append((normalize_rows(inputs, self.normalize), labels, full))
            learners = rng.permutation(self._learners(i))
            plan += [
                (i, learners[j : j + self.batch_size])
                for j in range(0, len(learners), self.batch_size)
            ]
        for b in rng.permutation(len(plan)):  # batches of different cutoffs interleaved
            i, learners = plan[b]
            inputs, labels, full = views[i]
            extra = {}
            if self.world_size > 1:  # every rank draws the same plan, then takes its share
                counted = np.asarray(labels[learners].sum(axis=1)).ravel() > 0
                learners, scale = shard_batch(learners, counted, self.rank, self.world_size)
                extra["loss_scale"] = scale
            old = self.older[i]
            yield {
                "learners": torch.from_numpy(learners.astype(np.int64)),
                "history": csr_bags(inputs, learners),
                "labels": csr_bags(labels, learners),
                "course_bags": self.course_bags[i],
                "content": self.content,
                "teacher": self.teachers[i],
                "full_history": None if full is None else csr_bags(full, learners),
                "known": _known_bags(inputs, old, learners),
                "known_full": None if full is None else _known_bags(full, old, learners),
                **extra,
            }


class EvalBatches(IterableDataset):
    """The snapshot's learners with labels (or all given learners), in chunks, in order."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        batch_size: int = 1024,
        normalize: str = "mean",
        learners: np.ndarray | None = None,
        content: sp.csr_matrix | None = None,
    ):
        self.snapshot, self.batch_size = snapshot, batch_size
        self.history = normalize_rows(snapshot.history, normalize)
        self.learners = snapshot.label_learners() if learners is None else np.asarray(learners)
        self.course_bags = csr_bags(snapshot.course_bags, key=f"course_bags/{snapshot.name}")
        self.content = None if content is None else csr_bags(content, key="content")

    def __len__(self) -> int:
        return -(-len(self.learners) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for j in range(0, len(self.learners), self.batch_size):
            learners = self.learners[j : j + self.batch_size]
            batch = {
                "learners": torch.from_numpy(learners.astype(np.int64)),
                "history": csr_bags(self.history, learners),
                "course_bags": self.course_bags,
                "content": self.content,
                "seen": self.snapshot.seen[learners],
            }
            if self.snapshot.labels is not None:
                batch["truth"] = self.snapshot.labels[learners]
            yield batch
