"""An ensemble of two-towers: the mean of K members' scores, served as one two-tower.

    score(l, c) = (1/K) sum_k ( u_k(l) . v_k(c) [+ b_k(c)] )
                = [u_1/K, ..., u_K/K (, 1)] . [v_1, ..., v_K (, mean_k b_k)]

The average of dot products is a dot product of concatenated vectors, so an ensemble is
served exactly as one model is: one learner matrix, one course matrix, one exact (or
approximate) top-K search over (sum_k d_k)-wide vectors (`NCFRecommender` takes either).
Members differ only in their seed (initial weights, dropout, batch order, the teacher's
sketch): the same architecture and inputs, so one set of learner and course inputs feeds
every member. Cosine members are refused: a mean of cosines over a temperature is not a dot
product of the towers' outputs. `model_from_config` rebuilds either kind from a saved
`config` (`NCFRecommender.load`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ncf.bags import Bags
from ncf.model import TwoTower

__all__ = ["TwoTowerEnsemble", "model_from_config"]


class TwoTowerEnsemble(nn.Module):
    """K trained `TwoTower`s of one architecture, scored as their mean (module docstring).

    Presents what serving, evaluation and the plots read of a `TwoTower`: `learners`,
    `courses`, `score`, `score_pairs`, `normalize`, `embedding_dim`, `course_bias`,
    `n_learners`, `n_courses`, `score_kind`, `learner_tower` (the members' common inputs:
    which of history bag and ID rows the learner side reads) and `config`. It is not trained
    as a whole: each member is fitted alone (`experiments.train_ncf`), then combined.
    """

    def __init__(self, members: Sequence[TwoTower]):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        bad = [type(m).__name__ for m in members if not isinstance(m, TwoTower)]
        if bad:
            raise TypeError(f"ensemble members must be TwoTower models, got {bad}")
        first = members[0].config
        differ = {
            k: [m.config[k] for m in members]
            for k in first
            if any(m.config[k] != first[k] for m in members[1:])
        }
        if differ:
            raise ValueError(
                "ensemble members must share one architecture (they differ only in their "
                f"seed); these settings differ: {differ}"
            )
        if first["score"] != "dot":
            raise ValueError(
                f"ensemble members must score by dot product (score='dot'), got "
                f"{first['score']!r}: a mean of cosines over a temperature is not one dot product"
            )
        self.members = nn.ModuleList(members)
        self.n_learners, self.n_courses = members[0].n_learners, members[0].n_courses
        self.score_kind, self.temperature = "dot", 1.0
        self._member_dim = members[0].embedding_dim
        self._biased = members[0].course_bias is not None

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able: the members' constructor arguments (`model_from_config`)."""
        return {"members": [m.config for m in self.members]}

    @property
    def learner_tower(self) -> nn.Module:
        """The first member's learner tower: its `bag` and `ids` say which inputs every
        member's learner side reads (they share the architecture)."""
        return self.members[0].learner_tower

    @property
    def embedding_dim(self) -> int:
        return self._member_dim * len(self.members)

    @property
    def course_bias(self) -> torch.Tensor | None:
        """(n_courses,) the members' mean course bias, or None without one."""
        if not self._biased:
            return None
        return torch.stack([m.course_bias for m in self.members]).mean(0)

    def learners(self, history: Bags | None, learner_idx: torch.Tensor) -> torch.Tensor:
        """(B, K d) the members' learner vectors over K ((B, K d + 1) with a course bias: a
        last column of ones)."""
        d, k = self._member_dim, len(self.members)
        parts = [m.learners(history, learner_idx)[:, :d] / k for m in self.members]
        if self._biased:
            parts.append(parts[0].new_ones(parts[0].shape[0], 1))
        return torch.cat(parts, dim=1)

    def courses(
        self, cowatch: Bags | None, course_idx: torch.Tensor, content: Bags | None = None
    ) -> torch.Tensor:
        """(C, K d) the members' course vectors ((C, K d + 1) with the mean course bias last)."""
        d = self._member_dim
        parts = [m.courses(cowatch, course_idx, content)[:, :d] for m in self.members]
        if self._biased:
            parts.append(self.course_bias[course_idx].unsqueeze(1))
        return torch.cat(parts, dim=1)

    def normalize(self, emb: torch.Tensor) -> torch.Tensor:
        return emb  # dot-product members only

    def score(self, learners: torch.Tensor, courses: torch.Tensor) -> torch.Tensor:
        """(B, D) x (C, D) -> (B, C): the members' mean score."""
        return learners @ courses.T

    def score_pairs(self, learners: torch.Tensor, courses: torch.Tensor) -> torch.Tensor:
        """Aligned rows (n, D) x (n, D) -> (n,)."""
        return (learners * courses).sum(-1)


def model_from_config(config: dict[str, Any]) -> TwoTower | TwoTowerEnsemble:
    """The untrained model a saved `config` describes: an ensemble when it lists `members`,
    else one `TwoTower`; its weights are then loaded from the saved state dict."""
    if "members" in config:
        return TwoTowerEnsemble([TwoTower(**c) for c in config["members"]])
    return TwoTower(**config)
