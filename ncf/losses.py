"""Training losses for a batch of B learners, all on the device.

Every loss takes the learner embeddings `L` (B, d), a function giving course embeddings for
any course indices, the batch's label bags (positives, with weights) and its history bags:
the courses never treated as negatives, i.e. the learner's input courses plus, where the
lookback window is shorter than the log, those watched before it (`ncf.batches.older`:
evaluation removes every course watched before the cutoff, so training does not push them
down either):

    full_softmax     softmax over every course; history courses masked out of the denominator;
                     cross-entropy averaged over each learner's positives (label-weighted).
                     Best on ML-100K (benchmarks/README.md); costs a (B, n_courses) logit matrix.
    sampled_softmax  in-batch softmax: the candidates are the batch's positives (+ optional
                     uniform extras); logits corrected by -log q(course) (logQ, Yi et al. 2019)
                     since popular courses appear as in-batch negatives more often.
    bce              binary cross-entropy: each positive against k negatives drawn on the
                     device every step (uniform or popularity^alpha); negatives that are one of
                     the learner's known courses (history or labels) are masked out of the loss.

Beside any of them, `distillation` fits the model's softmax over every course to a teacher's
(`ncf.teacher`): cross-entropy against the teacher's softmax at a temperature (optionally of
the teacher's scores standardized per learner), input courses out of both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from ncf.bags import Bags

__all__ = [
    "LOSSES", "full_softmax", "sampled_softmax", "bce_sampled", "distillation", "known_mask",
    "standardize_scores",
]  # fmt: skip

LOSSES = ("full_softmax", "sampled_softmax", "bce")
CourseFn = Callable[[torch.Tensor | None], torch.Tensor]  # course idx (C,) or None=all -> (C, d)


class Scorer(Protocol):
    def score(self, learners: torch.Tensor, courses: torch.Tensor) -> torch.Tensor: ...  # (B,C)
    def score_pairs(
        self, learners: torch.Tensor, courses: torch.Tensor
    ) -> torch.Tensor: ...  # (n,)


def _pair_keys(bags: Bags, n_courses: int) -> torch.Tensor:
    """(nnz,) int64 key row * n_courses + course of every bag entry (row = bag number)."""
    return bags.bag_of_entry() * n_courses + bags.indices


def known_mask(
    rows: torch.Tensor, courses: torch.Tensor, known_keys_sorted: torch.Tensor, n_courses: int
) -> torch.Tensor:
    """True where (rows[i], courses[i]) is a known pair; known keys sorted ascending."""
    key = rows * n_courses + courses
    if known_keys_sorted.numel() == 0:
        return torch.zeros_like(key, dtype=torch.bool)
    pos = torch.searchsorted(known_keys_sorted, key).clamp_max(known_keys_sorted.numel() - 1)
    return known_keys_sorted[pos] == key


def _with_inputs_set(x: torch.Tensor, history: Bags | None, value) -> torch.Tensor:
    """(B, n_courses) x with each learner's input courses (its history bag) set to value."""
    if history is None or not history.indices.numel():
        return x
    fill = torch.tensor(value, device=x.device, dtype=x.dtype)
    return x.index_put((history.bag_of_entry(), history.indices), fill)


def _without_inputs(logits: torch.Tensor, history: Bags | None) -> torch.Tensor:
    """(B, n_courses) logits with each learner's input courses at -inf: not candidates, so
    they leave the softmax denominator."""
    return _with_inputs_set(logits, history, float("-inf"))


def full_softmax(
    L: torch.Tensor, courses: CourseFn, model: Scorer, labels: Bags, history: Bags | None
) -> torch.Tensor:
    raw = model.score(L, courses(None))  # (B, n_courses)
    row = labels.bag_of_entry()  # (n_pos,)
    # A positive that is also an input course (a re-watch, when labels keep watched courses:
    # inputs.exclude_seen_from_labels=false) stays a candidate, as in sampled_softmax:
    # masked, its log-probability was -inf and the loss inf.
    logits = _without_inputs(raw, history).index_put(
        (row, labels.indices), raw[row, labels.indices]
    )
    logp = torch.log_softmax(logits, dim=1)  # (B, n_courses)
    picked = logp[row, labels.indices] * labels.weights  # (n_pos,)
    per_row = torch.zeros(L.shape[0], device=L.device, dtype=picked.dtype).index_add(0, row, picked)
    total = torch.zeros_like(per_row).index_add(0, row, labels.weights)
    has = total > 0
    return -(per_row[has] / total[has]).mean()


def sampled_softmax(
    L: torch.Tensor,
    courses: CourseFn,
    model: Scorer,
    labels: Bags,
    history: Bags | None,
    *,
    log_q: torch.Tensor,
    n_courses: int,
    extra_negatives: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log_q: (n_courses,) log sampling probability of each course (log popularity share)."""
    row = labels.bag_of_entry()  # (n_pos,)
    cand = labels.indices
    if extra_negatives:
        extra = torch.randint(
            0, n_courses, (extra_negatives,), device=L.device, generator=generator
        )
        cand = torch.cat([cand, extra])
    cand, inverse = torch.unique(cand, return_inverse=True)  # (C,) sorted; positive -> column
    target = inverse[: labels.indices.numel()]  # (n_pos,)
    logits = model.score(L[row], courses(cand)) - log_q[cand]  # (n_pos, C)
    # A candidate that is another known course of the same learner is not a negative.
    keys = (
        torch.cat(
            [_pair_keys(labels, n_courses)] + ([_pair_keys(history, n_courses)] if history else [])
        )
        .sort()
        .values
    )
    rows = row.unsqueeze(1).expand(-1, cand.numel())
    is_known = known_mask(rows, cand.expand_as(rows), keys, n_courses)
    is_known[torch.arange(row.numel(), device=L.device), target] = False
    logits = logits.masked_fill(is_known, float("-inf"))
    loss = F.cross_entropy(logits, target, reduction="none")  # (n_pos,)
    return (loss * labels.weights).sum() / labels.weights.sum()


def bce_sampled(
    L: torch.Tensor,
    courses: CourseFn,
    model: Scorer,
    labels: Bags,
    history: Bags | None,
    *,
    negative_probs: torch.Tensor,
    n_negatives: int,
    n_courses: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """negative_probs: (n_courses,) sampling distribution (uniform or popularity^alpha)."""
    row = labels.bag_of_entry()  # (n_pos,)
    n_pos = row.numel()
    neg = torch.multinomial(
        negative_probs, n_pos * n_negatives, replacement=True, generator=generator
    )  # (n_pos * k,)
    neg_row = row.repeat_interleave(n_negatives)
    keys = (
        torch.cat(
            [_pair_keys(labels, n_courses)] + ([_pair_keys(history, n_courses)] if history else [])
        )
        .sort()
        .values
    )
    valid = ~known_mask(neg_row, neg, keys, n_courses)  # a known course is not a negative
    cand, inverse = torch.unique(torch.cat([labels.indices, neg]), return_inverse=True)
    C = courses(cand)  # (n_cand, d): each distinct course through the tower once
    s_pos = model.score_pairs(L[row], C[inverse[:n_pos]])  # (n_pos,)
    s_neg = model.score_pairs(L[neg_row], C[inverse[n_pos:]])  # (n_pos * k,)
    pos_loss = F.binary_cross_entropy_with_logits(s_pos, torch.ones_like(s_pos), reduction="none")
    neg_loss = F.binary_cross_entropy_with_logits(s_neg, torch.zeros_like(s_neg), reduction="none")
    w = labels.weights
    return ((pos_loss * w).sum() + (neg_loss * valid).sum()) / (w.sum() + valid.sum())


def standardize_scores(scores: torch.Tensor, history: Bags | None) -> torch.Tensor:
    """(B, n_courses) scores minus each learner's mean, over its sd, both taken over the
    courses that are not the learner's inputs (input courses come out as 0; they are masked
    later). The ranking of every row is unchanged; its spread becomes 1."""
    w = _with_inputs_set(torch.ones_like(scores), history, 0.0)  # (B, n_courses) candidates
    n = w.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1) candidates per learner
    mean = (scores * w).sum(1, keepdim=True) / n
    centred = (scores - mean) * w
    sd = (centred.square().sum(1, keepdim=True) / n).sqrt()
    return centred / sd.clamp_min(1e-12)


def distillation(
    L: torch.Tensor,
    courses: CourseFn,
    model: Scorer,
    teacher_scores: torch.Tensor,
    history: Bags,
    *,
    temperature: float,
    standardize: bool = False,
) -> torch.Tensor:
    """Mean over learners of CE(softmax(teacher_scores / T), softmax(model logits)), both over
    the courses that are not the learner's inputs. teacher_scores: (B, n_courses).

    standardize: the teacher's scores are first standardized per learner
    (`standardize_scores`), so T is in units of the learner's own spread of scores. Why: EASE
    scores are sums over the history, so the raw teacher is sharper the more a learner has
    watched, while the learner tower reads a mean-normalized bag and cannot see that length.
    """
    if standardize:
        teacher_scores = standardize_scores(teacher_scores, history)
    teacher_logits = _without_inputs(teacher_scores / temperature, history)  # (B, n_courses)
    logits = _without_inputs(model.score(L, courses(None)), history)
    # A learner with every course masked (it has watched them all) has no candidate: its row
    # would be all -inf, its softmax NaN, and the NaN would reach every gradient. It gets a
    # row of zeros instead, and no term.
    empty = torch.isneginf(teacher_logits).all(dim=1, keepdim=True)  # (B, 1)
    if empty.any():
        teacher_logits = teacher_logits.masked_fill(empty, 0.0)
        logits = logits.masked_fill(empty, 0.0)
    target = torch.softmax(teacher_logits, dim=1)
    logp = torch.log_softmax(logits, dim=1)
    # input courses: target 0 and logp -inf; 0 * -inf would be NaN, so they are zeroed
    logp = torch.where(target > 0, logp, torch.zeros_like(logp))
    per_row = -(target * logp).sum(dim=1)  # (B,)
    if empty.any():
        return per_row[~empty[:, 0]].sum() / (~empty).sum().clamp_min(1)
    return per_row.mean()
