"""A plain PyTorch NeuMF training loop: the speed (and sanity) peer for the two-tower.

    out = train_neumf(X_train, epochs=20, batch_size=256, seed=0)
    out["samples_per_s"], out["seconds_per_epoch"]
    topk = full_ranking_topk(out["model"].score, 10, users=users, exclude=X_train)

NeuMF as in He et al. 2017 ("Neural Collaborative Filtering"), trained jointly from scratch
(no GMF/MLP pretraining): a GMF branch (element-wise product of `factors`-dim user and item
embeddings) and an MLP branch (concatenated user and item embeddings of mlp_layers[0] / 2
each, then Linear + ReLU down `mlp_layers`), concatenated into one Linear to a logit. Loss:
binary cross-entropy over the observed (learner, course) pairs (label 1) and, re-sampled
every epoch, `n_negatives` uniform courses per positive that the learner has not watched
(label 0). Adam, embeddings initialised N(0, 0.01) as in the paper's code.

It is written the way one writes it in a notebook: numpy negative sampling each epoch, one
`torch.randperm` shuffle, and slices of the sample tensors as mini-batches. A
`DataLoader(TensorDataset(...))` would collate sample by sample in Python and make the peer
several times slower than its model is; slicing keeps the comparison about the models and
the training step. Time per epoch counts the negative sampling and every optimiser step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from evaluation import resolve_device
from watchlog.cowatch import binarize_watches

__all__ = ["NeuMF", "sample_training_pairs", "train_neumf"]


class NeuMF(nn.Module):
    """GMF + MLP, concatenated (He et al. 2017). forward(users, items) -> (batch,) logits."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int = 8,
        mlp_layers: Sequence[int] = (64, 32, 16, 8),
    ):
        super().__init__()
        if len(mlp_layers) < 2 or mlp_layers[0] % 2:
            raise ValueError(
                f"mlp_layers: need >= 2 widths, the first even (split between user and item); "
                f"got {tuple(mlp_layers)}"
            )
        self.n_items = n_items
        half = mlp_layers[0] // 2
        self.user_gmf = nn.Embedding(n_users, factors)
        self.item_gmf = nn.Embedding(n_items, factors)
        self.user_mlp = nn.Embedding(n_users, half)
        self.item_mlp = nn.Embedding(n_items, half)
        layers: list[nn.Module] = []
        for a, b in zip(mlp_layers[:-1], mlp_layers[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(factors + mlp_layers[-1], 1)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=0.01)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.user_gmf(users) * self.item_gmf(items)  # (batch, factors)
        mlp = self.mlp(torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=1))
        return self.out(torch.cat([gmf, mlp], dim=1)).squeeze(1)  # (batch,)

    @torch.inference_mode()
    def score(self, users: Any) -> torch.Tensor:
        """(len(users), n_items) logits for every item: a score_fn for full_ranking_topk."""
        dev = self.out.weight.device
        u = torch.as_tensor(np.asarray(users), dtype=torch.long, device=dev)
        items = torch.arange(self.n_items, device=dev)
        uu = u.repeat_interleave(self.n_items)  # (c * n_items,)
        return self(uu, items.repeat(u.shape[0])).view(u.shape[0], self.n_items)


def sample_training_pairs(
    xb: sp.csr_matrix, n_negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positives of binary `xb` plus `n_negatives` unwatched uniform items per positive.

    Returns (users, items, labels) as (n_pos * (1 + n_negatives),) arrays. Draws that hit a
    watched item are redrawn (vectorized) until none is left.
    """
    n_users, n_items = xb.shape
    pos_u = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(xb.indptr))  # (n_pos,)
    pos_i = xb.indices.astype(np.int64)
    watched = np.sort(pos_u * n_items + pos_i)  # sorted keys of the positives
    neg_u = np.repeat(pos_u, n_negatives)  # (n_pos * n_negatives,)
    neg_i = rng.integers(0, n_items, neg_u.size)
    todo = np.arange(neg_u.size)
    while todo.size:
        key = neg_u[todo] * n_items + neg_i[todo]
        pos = np.minimum(np.searchsorted(watched, key), watched.size - 1)
        todo = todo[watched[pos] == key]  # draws that hit a watched item
        neg_i[todo] = rng.integers(0, n_items, todo.size)
    users = np.concatenate([pos_u, neg_u])
    items = np.concatenate([pos_i, neg_i])
    labels = np.concatenate([np.ones(pos_u.size), np.zeros(neg_u.size)]).astype(np.float32)
    return users, items, labels


def train_neumf(
    X_train: Any,
    epochs: int = 20,
    batch_size: int = 256,
    *,
    factors: int = 8,
    mlp_layers: Sequence[int] = (64, 32, 16, 8),
    n_negatives: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Train NeuMF on the learner x course matrix X_train (entry > 0 = positive).

    Returns samples_per_s (training samples, positives + negatives, over the total time),
    seconds_per_epoch (mean), epoch_seconds (list), losses (mean BCE per epoch),
    samples_per_epoch, and the trained `model` (in eval mode).
    threads: torch intra-op threads during training (restored after); None leaves torch's
    setting. On a shared, oversubscribed CPU, 1 thread was 12x faster than 2 here (OpenMP
    threads spin-waiting on tiny per-batch ops): use the same setting for every contender.
    """
    if not sp.issparse(X_train):
        raise TypeError(f"X_train: must be a scipy sparse matrix; got {type(X_train).__name__}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("n_negatives", n_negatives)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: must be a positive int; got {v!r}")
    xb = binarize_watches(X_train)  # (n_users, n_items) int32 0/1
    if xb.nnz == 0:
        raise ValueError(f"X_train {xb.shape}: has no positive entry to train on")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(xb, epochs, batch_size, factors, mlp_layers, n_negatives, lr, seed, device)
    finally:
        torch.set_num_threads(before)


def _train(
    xb: sp.csr_matrix,
    epochs: int,
    batch_size: int,
    factors: int,
    mlp_layers: Sequence[int],
    n_negatives: int,
    lr: float,
    seed: int,
    device: str | torch.device,
) -> dict[str, Any]:
    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = NeuMF(xb.shape[0], xb.shape[1], factors, mlp_layers).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    epoch_seconds, losses = [], []
    n_samples = 0
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        users, items, labels = sample_training_pairs(xb, n_negatives, rng)
        u = torch.from_numpy(users).to(dev)
        i = torch.from_numpy(items).to(dev)
        y = torch.from_numpy(labels).to(dev)
        perm = torch.randperm(u.shape[0], device=dev)
        total = torch.zeros((), device=dev)
        for b in range(0, u.shape[0], batch_size):
            idx = perm[b : b + batch_size]
            loss = loss_fn(model(u[idx], i[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach() * idx.shape[0]
        losses.append(float(total) / u.shape[0])  # one device sync per epoch
        epoch_seconds.append(time.perf_counter() - start)
        n_samples = int(u.shape[0])
    model.eval()
    return {
        "samples_per_s": n_samples * epochs / sum(epoch_seconds),
        "seconds_per_epoch": float(np.mean(epoch_seconds)),
        "epoch_seconds": epoch_seconds,
        "losses": losses,
        "samples_per_epoch": n_samples,
        "model": model,
    }
