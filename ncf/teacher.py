"""A distillation teacher for the two-tower: EASE's item-item weights on one snapshot.

Tuned linear item-item models beat neural recommenders on small, dense data
(benchmarks/README.md, "The gap to EASE"). The two-tower can hold EASE's rankings (EASE
factored to rank 128 keeps its accuracy) but softmax training on sparse labels does not find
them. So, as an option, every denoising step also fits the two-tower's softmax to EASE's:

    teacher logits = (x_input B) / T                  # (batch, n_courses), x binary
    loss = (1 - w) * CE(labels) + w * CE(softmax(teacher logits), model)

with the learner's input courses out of both softmaxes (`ncf.losses.distillation`). With
`NCFModule(distill_inputs="history" | "both")` the term is (also) taken on the learner's whole
history, the input the learner tower reads at evaluation: x_input above becomes x_history.
With `NCFModule(distill_standardize=True)` the teacher's scores are standardized per learner
before the temperature (z = (s - mean) / sd over the candidate courses, then z / T): raw EASE
scores are sums over the history, sharper the longer it is, while the learner tower reads a
mean-normalized bag and cannot see its length.

No leakage: a teacher is fitted on the history of the snapshot it teaches, the same pairs the
denoising split draws its inputs and labels from, never on validation or test labels; the
refit fits a new one on the refit snapshot. Rolling-cutoff snapshots get no teacher (a
teacher fitted at a later cutoff would know their labels).

Its L2 is chosen on validation when the datamodule gets a list (`teacher_l2: [50, 100, ...]`,
the default config): `choose_teacher_l2` fits the teacher at every value on the validation
snapshot's history, ranks that snapshot's labelled learners' courses by its scores (history
removed) and keeps the best NDCG@10, the rule the EASE baseline's L2 is chosen by. Only
validation labels are read, as for the epoch; the refit keeps the value chosen.

Memory. With `rank` set (the default config: 256) the teacher is EASE with the Gram matrix
as its diagonal plus its top-`rank` part (`baselines.ease_low_rank`): two float32 factors of
n_courses x rank on the device (2 MB for ML-100K, 200 MB at 100,000 courses), and a batch's
scores are (x W) R, a (B, rank) x (rank, n_courses) matmul. rank=None keeps dense EASE:
n_courses^2 float32 (11 MB for ML-100K, 400 MB at 10,000 courses, 40 GB at 100,000).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from baselines.ease import ease_weights
from baselines.ease_low_rank import LowRankEASE, low_rank_ease, low_rank_gram
from baselines.ease_model import EASE
from baselines.selection import Window
from evaluation import evaluate_full_ranking
from ncf.bags import Bags
from ncf.inputs import Snapshot

__all__ = ["Teacher", "TeacherChoice", "choose_teacher_l2", "fit_teacher"]


@dataclass(frozen=True, eq=False)
class Teacher:
    """EASE weights as `weights` (n_courses, n_courses) float32, zero diagonal, with `right`
    None; or low-rank, B ~ weights @ right with `weights` (n_courses, r) and `right`
    (r, n_courses). `key` names the snapshot, so a module can cache the device copy."""

    weights: torch.Tensor
    key: str = ""
    right: torch.Tensor | None = None

    def scores(self, history: Bags) -> torch.Tensor:
        """(B, n_courses) EASE scores x_u B of the history bags, read as binary (the bag
        weights are ignored): the sum of the B rows of each learner's input courses."""
        rows = F.embedding_bag(history.indices, self.weights, history.offsets, mode="sum")
        return rows if self.right is None else rows @ self.right  # (B, r) @ (r, n_courses)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.right is None else self.right.nelement() * self.right.element_size()
        return self.weights.nelement() * self.weights.element_size() + extra

    def to(self, device: torch.device | str) -> Teacher:
        right = None if self.right is None else self.right.to(device, non_blocking=True)
        return Teacher(self.weights.to(device, non_blocking=True), self.key, right)


def fit_teacher(snapshot: Snapshot, l2: float, rank: int | None = None, seed: int = 0) -> Teacher:
    """EASE (L2 `l2`) on the snapshot's history: low-rank with `rank` set, dense without."""
    if rank is None:
        weights = torch.from_numpy(ease_weights(snapshot.history, l2))
        return Teacher(weights, key=f"teacher/{snapshot.name}")
    return _low_rank_teacher(snapshot, low_rank_ease(snapshot.history, l2, rank=rank, seed=seed))


def _low_rank_teacher(snapshot: Snapshot, factors: LowRankEASE) -> Teacher:
    key = f"teacher/{snapshot.name}"
    return Teacher(torch.from_numpy(factors.left), key, torch.from_numpy(factors.right))


@dataclass(frozen=True)
class TeacherChoice:
    """The L2 kept and every value's validation NDCG@10 (the teacher's rank and seed);
    `teacher`: the one fitted at that L2 on the snapshot it was chosen on, reused for it."""

    l2: float
    valid_ndcg: dict[float, float]
    teacher: Teacher | None = field(default=None, compare=False)


def choose_teacher_l2(
    snapshot: Snapshot, grid: Sequence[float], rank: int | None = None, seed: int = 0
) -> TeacherChoice:
    """The L2 in `grid` whose teacher ranks `snapshot`'s labels best (NDCG@10, full ranking of
    the courses not in a learner's history; ties: the first value). The teacher is fitted on
    the snapshot's history exactly as `fit_teacher` does (binary, same rank and seed); low
    rank, its SVD is computed once for the whole grid (`LowRankGram`)."""
    values = [float(v) for v in grid]
    if not values:
        raise ValueError("teacher_l2: the list of values to choose from is empty")
    if snapshot.labels is None or snapshot.labels.nnz == 0:
        raise ValueError(
            f"choose_teacher_l2: snapshot {snapshot.name!r} has no labels to choose the "
            "teacher's L2 on; give teacher_l2 one value"
        )
    inputs = (snapshot.history > 0).astype(np.float32).tocsr()
    if rank is None:  # dense: every L2 is its own inverse
        window = Window(inputs, snapshot.labels, exclude=snapshot.seen)
        scores = {
            v: window.evaluate(EASE(v, rank=None, max_dense_gib=None))["ndcg@10"] for v in values
        }
        best = max(scores, key=lambda v: (scores[v], -values.index(v)))
        return TeacherChoice(best, scores)
    gram = low_rank_gram(snapshot.history, rank, seed)  # (one SVD, every L2)
    users = snapshot.label_learners()
    scores, best, kept = {}, None, None
    for v in values:
        factors = gram.ease(v)
        ranked = evaluate_full_ranking(
            lambda rows, f=factors: f.scores(inputs[rows]), snapshot.labels, users=users,
            exclude=snapshot.seen,
        )  # fmt: skip
        scores[v] = ranked.summary()["ndcg@10"]
        if best is None or scores[v] > scores[best]:  # ties: the first value
            best, kept = v, factors
    return TeacherChoice(best, scores, _low_rank_teacher(snapshot, kept))
