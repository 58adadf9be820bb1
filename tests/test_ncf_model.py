"""ncf.model and ncf.losses: pooling, scores, bias column, and the three losses against
hand-written dense versions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ncf.bags import csr_bags
from ncf.losses import bce_sampled, full_softmax, known_mask, sampled_softmax
from ncf.model import AttentionPool, TwoTower

torch.manual_seed(0)


def _bags(rows):
    m = sp.csr_matrix(np.array(rows, dtype=np.float32))
    return csr_bags(m), m


def test_attention_pool_single_entry_and_empty_bag():
    table = torch.randn(5, 8)
    bags, _ = _bags([[0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0]])
    pool = AttentionPool(8)
    out = pool(table, bags)
    torch.testing.assert_close(out[0], table[2])  # one entry: attention weight 1
    assert out[1].abs().sum() == 0  # empty bag pools to zeros
    # equal prior weights: a convex combination of entries 0 and 1
    a = torch.linalg.lstsq(torch.stack([table[0], table[1]]).T, out[2].unsqueeze(1)).solution
    assert a.sum().item() == pytest.approx(1.0, abs=1e-5) and (a >= 0).all()


def test_two_tower_shapes_scores_and_bias_column():
    model = TwoTower(6, 5, bag_dim=8, mlp=(4, 3), course_bias=True).eval()
    hist, _ = _bags(np.eye(6, 5))
    cb, _ = _bags(np.ones((5, 5)) - np.eye(5))
    L = model.learners(hist, torch.arange(6))
    C = model.courses(cb, torch.arange(5))
    assert L.shape == (6, 4) and C.shape == (5, 4) and (L[:, -1] == 1).all()
    with torch.no_grad():
        model.course_bias.copy_(torch.arange(5.0))
    C = model.courses(cb, torch.arange(5))
    plain = L[:, :-1] @ C[:, :-1].T
    torch.testing.assert_close(model.score(L, C), plain + torch.arange(5.0))
    torch.testing.assert_close(model.score_pairs(L[:5], C), torch.diagonal(model.score(L[:5], C)))
    with pytest.raises(ValueError, match="course_bias needs score='dot'"):
        TwoTower(6, 5, course_bias=True, score="cosine")


def test_id_only_model_is_matrix_factorization():
    mf = TwoTower(
        4, 3, bag_dim=2, mlp=(), activation="identity", dropout=0.0,
        learner_history=False, course_cowatch=False, learner_ids=True, course_ids=True,
    )  # fmt: skip
    L = mf.learners(None, torch.arange(4))
    C = mf.courses(None, torch.arange(3))
    torch.testing.assert_close(L, mf.learner_tower.ids.weight)
    torch.testing.assert_close(
        mf.score(L, C), mf.learner_tower.ids.weight @ mf.course_tower.ids.weight.T
    )


def test_cosine_score_is_bounded_by_one_over_temperature():
    model = TwoTower(3, 4, bag_dim=8, mlp=(6,), score="cosine", temperature=0.5)
    s = model.score(torch.randn(3, 6), torch.randn(4, 6))
    assert s.abs().max() <= 2.0 + 1e-5


class _Dot:
    def score(self, a, b):
        return a @ b.T

    def score_pairs(self, a, b):
        return (a * b).sum(-1)


def test_full_softmax_matches_dense_computation():
    L, C = torch.randn(2, 3), torch.randn(5, 3)
    labels, lab = _bags([[0, 1, 0, 1, 0], [0, 0, 0, 0, 2]])
    history, _ = _bags([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    loss = full_softmax(L, lambda idx: C if idx is None else C[idx], _Dot(), labels, history)
    logits = L @ C.T
    logits[0, 0] = -np.inf  # learner 0's input course is not a candidate
    logp = torch.log_softmax(logits, 1)
    expect = -((logp[0, 1] + logp[0, 3]) / 2 + logp[1, 4]) / 2
    torch.testing.assert_close(loss, expect)


def test_full_softmax_keeps_a_rewatched_positive_as_a_candidate():
    """Labels that keep watched courses (inputs.exclude_seen_from_labels=false): a positive
    that is also an input course was masked to -inf, so the loss was inf every epoch."""
    L, C = torch.randn(1, 3), torch.randn(4, 3)
    labels, _ = _bags([[1, 0, 1, 0]])
    history, _ = _bags([[1, 1, 0, 0]])  # course 0: watched before and again in the window
    loss = full_softmax(L, lambda idx: C if idx is None else C[idx], _Dot(), labels, history)
    logits = L @ C.T
    logits[0, 1] = -np.inf  # the other input course is still no candidate
    logp = torch.log_softmax(logits, 1)
    torch.testing.assert_close(loss, -(logp[0, 0] + logp[0, 2]) / 2)


def test_known_mask_and_bce_negatives_skip_known_courses():
    keys = torch.tensor([0 * 5 + 1, 1 * 5 + 4]).sort().values
    m = known_mask(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 2, 4, 1]), keys, 5)
    assert m.tolist() == [True, False, True, False]
    # Every course but one is known for the only learner: all valid negatives are course 4.
    L, C = torch.randn(1, 3, requires_grad=True), torch.randn(5, 3)
    labels, _ = _bags([[1, 1, 0, 0, 0]])
    history, _ = _bags([[0, 0, 1, 1, 0]])
    g = torch.Generator().manual_seed(0)
    loss = bce_sampled(
        L, lambda idx: C[idx], _Dot(), labels, history,
        negative_probs=torch.full((5,), 0.2), n_negatives=50, n_courses=5, generator=g,
    )  # fmt: skip
    s = (L @ C.T)[0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    pos = bce(s[[0, 1]], torch.ones(2), reduction="sum")
    # the valid negatives are the draws of course 4 only; recompute their count with the same seed
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(torch.full((5,), 0.2), 100, replacement=True, generator=g)
    n4 = int((draws == 4).sum())
    expect = (pos + n4 * bce(s[4:5], torch.zeros(1), reduction="sum")) / (2 + n4)
    torch.testing.assert_close(loss, expect)


def test_sampled_softmax_masks_other_positives_and_applies_log_q():
    L, C = torch.randn(2, 3), torch.randn(4, 3)
    labels, _ = _bags([[1, 1, 0, 0], [0, 0, 1, 0]])
    log_q = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    loss = sampled_softmax(L, lambda idx: C[idx], _Dot(), labels, None, log_q=log_q, n_courses=4)
    logits = L @ C[:3].T - log_q[:3]  # candidates: the batch's positives 0, 1, 2
    rows = [(0, 0, 1), (0, 1, 0), (1, 2, None)]  # (learner, target, other positive to mask)
    parts = []
    for r, t, other in rows:
        z = logits[r].clone()
        if other is not None:
            z[other] = -np.inf
        parts.append(-torch.log_softmax(z, 0)[t])
    torch.testing.assert_close(loss, torch.stack(parts).mean())
