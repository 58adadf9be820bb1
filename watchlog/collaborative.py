"""Entity feature blocks beyond `FeatureEncoder`: raw scaled numerics, low-rank factors of a
label matrix, and concatenation of blocks.

`label_factors` gives GLMix random effects collaborative features: the per-learner model on
course factors and the per-course model on learner factors, both from a truncated SVD of the
*training* (learner x course) label matrix, signed (+1 positive, -1 negative, 0 unseen). Build
it from training rows only: factors from validation or test labels would leak them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from watchlog.features import FeatureBlock, to_csr32
from watchlog.report import DataReport

__all__ = ["concat_blocks", "scaled_numeric", "label_factors"]


def concat_blocks(blocks: Sequence[FeatureBlock]) -> FeatureBlock:
    """Blocks side by side (same rows); names must stay unique, groups are shifted."""
    if not blocks:
        raise ValueError("concat_blocks: no blocks")
    rows = {b.shape[0] for b in blocks}
    if len(rows) != 1:
        raise ValueError(f"concat_blocks: blocks have different row counts {sorted(rows)}")
    if len(blocks) == 1:
        return blocks[0]
    names: list[str] = []
    groups: dict[str, tuple[int, int]] = {}
    for b in blocks:
        for g, (lo, hi) in b.groups.items():
            if g in groups:
                raise ValueError(f"concat_blocks: group {g!r} is in more than one block")
            groups[g] = (lo + len(names), hi + len(names))
        names += b.names
    dup = pd.Index(names)
    if dup.has_duplicates:
        raise ValueError(
            f"concat_blocks: duplicate feature names {list(dup[dup.duplicated()][:5])}"
        )
    matrix = to_csr32(sp.hstack([b.matrix for b in blocks], format="csr"))
    return FeatureBlock(matrix, tuple(names), groups)


def scaled_numeric(
    table: pd.DataFrame, factors: Mapping[str, float], report: DataReport | None = None
) -> FeatureBlock:
    """Raw numeric columns times a fixed factor (no centring), missing -> 0, one group per
    column; e.g. GDMix's MovieLens features: age / 100, release year / 2000."""
    absent = [c for c in factors if c not in table.columns]
    if absent:
        raise KeyError(
            f"scaled_numeric: column(s) {absent} not in the table; available {list(table.columns)}"
        )
    cols, missing = [], {}
    for col, factor in factors.items():
        x = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        raw_present = table[col].notna().to_numpy()
        bad = (np.isnan(x) & raw_present) | np.isinf(x)
        if bad.any():
            ex = table[col][bad].head(5).tolist()
            raise ValueError(
                f"scaled_numeric: column {col!r} must hold finite numbers; {int(bad.sum()):,} of "
                f"{len(x):,} rows do not, e.g. {ex}"
            )
        miss = np.isnan(x)
        missing[col] = int(miss.sum())
        cols.append(np.where(miss, 0.0, x * float(factor)).astype(np.float32))
    matrix = to_csr32(np.column_stack(cols)) if cols else sp.csr_matrix((len(table), 0))
    if report is not None:
        report.add_step(
            "scaled numeric features",
            "table",
            len(table),
            len(table),
            **{f"{c}.missing_as_0": m for c, m in missing.items() if m},
        )
    names = tuple(factors)
    return FeatureBlock(to_csr32(matrix), names, {c: (j, j + 1) for j, c in enumerate(names)})


def label_factors(
    learner_idx: np.ndarray,
    course_idx: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, int],
    *,
    rank: int,
    seed: int = 0,
    scale: float = 1.0,
    group: str = "factors",
) -> tuple[FeatureBlock, FeatureBlock]:
    """Rank-`rank` factors of the signed label matrix of the given (training) rows.

    M (n_learners, n_courses): mean of 2y - 1 over a pair's rows, 0 where unseen. With
    M ~ U S V^T (randomized SVD, seeded), learner factors = U S^1/2, course factors =
    V S^1/2, each column then rescaled to root-mean-square `scale` over the entities that
    have rows (entities without rows get zeros). Returns (learner block, course block) with
    names `lf0..` / `cf0..` in one group `group`.
    """
    li = np.asarray(learner_idx, dtype=np.int64)
    ci = np.asarray(course_idx, dtype=np.int64)
    yy = np.asarray(y, dtype=np.float64)
    if not (li.shape == ci.shape == yy.shape) or li.ndim != 1:
        raise ValueError(
            f"label_factors: learner_idx, course_idx, y must be 1-D of one length, got "
            f"{li.shape}, {ci.shape}, {yy.shape}"
        )
    n_l, n_c = shape
    if not 1 <= rank < min(n_l, n_c):
        raise ValueError(f"label_factors: rank must be in [1, {min(n_l, n_c)}), got {rank}")
    signed = sp.csr_matrix((2.0 * yy - 1.0, (li, ci)), shape=shape)  # duplicates summed
    count = sp.csr_matrix((np.ones_like(yy), (li, ci)), shape=shape)
    signed.sum_duplicates()
    count.sum_duplicates()
    m = signed.copy()
    m.data = signed.data / count.data  # same sparsity pattern: both built from the same pairs
    u, s, vt = randomized_svd(m, rank, random_state=seed, n_iter=7)
    root = np.sqrt(s)
    lf = u * root  # (n_learners, rank)
    cf = vt.T * root  # (n_courses, rank)
    seen_l = np.bincount(li, minlength=n_l) > 0
    seen_c = np.bincount(ci, minlength=n_c) > 0
    blocks = []
    for f, seen, prefix in ((lf, seen_l, "lf"), (cf, seen_c, "cf")):
        rms = np.sqrt((f[seen] ** 2).mean(axis=0))  # (rank,)
        f = np.where(seen[:, None], f / np.where(rms > 0, rms, 1.0) * scale, 0.0)
        names = tuple(f"{prefix}{j}" for j in range(rank))
        blocks.append(FeatureBlock(to_csr32(f.astype(np.float32)), names, {group: (0, rank)}))
    return blocks[0], blocks[1]
