"""baselines.ease_low_rank: EASE with the Gram matrix as diagonal plus low rank."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from baselines.ease import ease_weights
from baselines.ease_low_rank import low_rank_ease


def _watches(n_learners=300, n_courses=60, seed=0) -> sp.csr_matrix:
    """Two blocks of courses with their own audiences, plus noise: a low-rank structure."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n_learners)  # (n_learners,)
    block = (np.arange(n_courses) < n_courses // 2).astype(int)  # (n_courses,)
    p = np.where(group[:, None] == block[None, :], 0.3, 0.03)
    return sp.csr_matrix((rng.random((n_learners, n_courses)) < p).astype(np.float32))


def test_full_rank_is_dense_ease_off_the_diagonal():
    x = _watches()
    f = low_rank_ease(x, l2=10.0, rank=60)
    b = f.left.astype(np.float64) @ f.right.astype(np.float64)
    dense = ease_weights(x, 10.0)
    off = ~np.eye(60, dtype=bool)
    np.testing.assert_allclose(b[off], dense[off], rtol=1e-3, atol=1e-5)


def _share_in_own_block(scores, x, group) -> float:
    """Share of each learner's top 10 (own courses out) in the block its group watches."""
    n_courses = x.shape[1]
    top = np.argsort(np.where(x.toarray() == 0, -scores, np.inf), axis=1)[:, :10]
    own = (top < n_courses // 2).astype(int) == group[:, None]
    return float(own.mean())


def test_low_rank_keeps_the_ranking_and_its_memory_is_linear_in_courses():
    x = _watches(n_courses=200)
    group = np.random.default_rng(0).integers(0, 2, 300)  # _watches' draw of the groups
    f = low_rank_ease(x, l2=10.0, rank=8)
    assert f.left.shape == (200, 8) and f.right.shape == (8, 200)
    assert f.nbytes == 2 * 200 * 8 * 4  # two float32 factors; dense would be 200^2
    dense = _share_in_own_block(x.toarray() @ ease_weights(x, 10.0), x, group)
    low = _share_in_own_block(f.scores(x), x, group)
    assert dense > 0.95 and low > 0.95, (dense, low)
    # one direction (popularity) cannot tell the two audiences apart
    assert _share_in_own_block(low_rank_ease(x, l2=10.0, rank=1).scores(x), x, group) < 0.8


def test_same_seed_same_factors_and_bad_arguments_are_refused():
    x = _watches()
    a, b = low_rank_ease(x, 10.0, rank=5, seed=3), low_rank_ease(x, 10.0, rank=5, seed=3)
    np.testing.assert_array_equal(a.left, b.left)
    with pytest.raises(ValueError, match="l2: must be finite and > 0"):
        low_rank_ease(x, 0.0)
    with pytest.raises(ValueError, match="rank: must be a positive integer"):
        low_rank_ease(x, 1.0, rank=0)


def test_an_empty_log_gives_zero_scores():
    f = low_rank_ease(sp.csr_matrix((5, 7), dtype=np.float32), 10.0, rank=3)
    assert f.scores(sp.csr_matrix((2, 7), dtype=np.float32)).shape == (2, 7)
    assert not f.scores(sp.csr_matrix(np.ones((2, 7), dtype=np.float32))).any()
