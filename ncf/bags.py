"""Sparse bags for `nn.EmbeddingBag`: CSR rows as (indices, offsets, per-sample weights).

A batch of B learners' histories is never a dense (B, n_courses) tensor: it is the nnz
course indices of those rows, where each row starts, and their weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["Bags", "csr_bags"]


@dataclass(frozen=True, eq=False)
class Bags:
    """B bags: indices (nnz,) int64, offsets (B,) int64 (start of each bag), weights (nnz,) float32.

    `key` names where the bags came from (e.g. "course_bags/train_0"), so a module can cache
    the device copy of bags that do not change between steps.
    """

    indices: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    key: str = ""

    @property
    def n_bags(self) -> int:
        return int(self.offsets.shape[0])

    def bag_of_entry(self) -> torch.Tensor:
        """(nnz,) int64 bag number of each entry."""
        lengths = torch.diff(
            self.offsets, append=torch.tensor([self.indices.shape[0]], device=self.offsets.device)
        )
        return torch.repeat_interleave(
            torch.arange(self.n_bags, device=self.offsets.device), lengths
        )

    def rows(self, idx: torch.Tensor) -> Bags:
        """The bags `idx` (C,) in that order, gathered on the bags' device (no Python loop)."""
        nnz = self.indices.shape[0]
        lengths = torch.diff(self.offsets, append=self.offsets.new_tensor([nnz]))  # (n_bags,)
        sel = lengths[idx]  # (C,)
        offsets = torch.cumsum(sel, 0) - sel  # (C,) start of each selected bag in the output
        total = int(sel.sum())
        # position in the source of each output entry: its bag's source start + rank in the bag
        pos = torch.repeat_interleave(self.offsets[idx] - offsets, sel) + torch.arange(
            total, device=idx.device
        )
        return Bags(self.indices[pos], offsets, self.weights[pos], self.key)

    def to(self, device: torch.device | str) -> Bags:
        return Bags(
            self.indices.to(device, non_blocking=True),
            self.offsets.to(device, non_blocking=True),
            self.weights.to(device, non_blocking=True),
            self.key,
        )


def csr_bags(m: sp.csr_matrix, rows: np.ndarray | None = None, *, key: str = "") -> Bags:
    """Bags for `rows` of a CSR matrix (all rows when None); vectorized row gather."""
    sub = m if rows is None else m[np.asarray(rows, dtype=np.int64)]
    indptr = sub.indptr.astype(np.int64)
    return Bags(
        torch.from_numpy(sub.indices.astype(np.int64)),
        torch.from_numpy(indptr[:-1].copy()),
        torch.from_numpy(np.ascontiguousarray(sub.data, dtype=np.float32)),
        key,
    )
