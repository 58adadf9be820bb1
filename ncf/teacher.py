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

Memory. With `rank` set (the default config: 256) the teacher is EASE with the Gram matrix
as its diagonal plus its top-`rank` part (`baselines.ease_low_rank`): two float32 factors of
n_courses x rank on the device (2 MB for ML-100K, 200 MB at 100,000 courses), and a batch's
scores are (x W) R, a (B, rank) x (rank, n_courses) matmul. rank=None keeps dense EASE:
n_courses^2 float32 (11 MB for ML-100K, 400 MB at 10,000 courses, 40 GB at 100,000).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from baselines.ease import ease_weights
from baselines.ease_low_rank import low_rank_ease
from ncf.bags import Bags
from ncf.inputs import Snapshot

__all__ = ["Teacher", "fit_teacher"]


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
    key = f"teacher/{snapshot.name}"
    if rank is None:
        return Teacher(torch.from_numpy(ease_weights(snapshot.history, l2)), key=key)
    factors = low_rank_ease(snapshot.history, l2, rank=rank, seed=seed)
    return Teacher(torch.from_numpy(factors.left), key, torch.from_numpy(factors.right))
