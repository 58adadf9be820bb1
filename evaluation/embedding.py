"""Embedding quality: do an item's nearest neighbours share its label (language, category)?

    res = knn_label_agreement(course_emb, courses["language"], k=10)
    res["agreement"], res["chance"], res["lift"]

Definitions. Items whose label is missing (None, NaN, pd.NA) are removed first: they are
neither queried nor anyone's neighbour; they are counted in `n_missing`. Among the remaining
n items with label counts n_c (sum n_c = n), item i's k nearest neighbours N_k(i) (itself
excluded) are found by `metric`, and

    agreement = (1/n) sum_i |{j in N_k(i) : label_j = label_i}| / k

Chance is the same average when N_k(i) is instead k items drawn uniformly without
replacement from the n - 1 others. For an item of label c, the number sharing its label is
hypergeometric (k draws, n_c - 1 successes among n - 1), with mean k (n_c - 1) / (n - 1), so
its expected agreement is (n_c - 1) / (n - 1) whatever k is. Averaging over items, n_c of
which have label c:

    chance = sum_c (n_c / n) * (n_c - 1) / (n - 1) = sum_c n_c (n_c - 1) / (n (n - 1))

i.e. the probability that two distinct items drawn at random share a label. lift =
agreement / chance (inf when chance = 0, i.e. all labels distinct; nan if also agreement = 0).

Neighbours come from `full_ranking_topk` with the identity as the exclusion matrix: chunks of
`chunk_size` query rows against all n items, so memory is chunk_size x n scores, never n x n.
Ties between equally distant neighbours go to the lower item index, as in `full_ranking_topk`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from evaluation._checks import check_choice, few
from evaluation.full_ranking import full_ranking_topk, resolve_device

__all__ = ["METRICS", "knn_label_agreement"]

METRICS = ("cosine", "euclidean", "dot")


def _embeddings(emb: Any) -> torch.Tensor:
    t = torch.as_tensor(emb) if isinstance(emb, np.ndarray) else emb
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"emb: must be a numpy array or torch tensor; got {type(emb).__name__}")
    if t.ndim != 2:
        raise ValueError(f"emb: expected a 2-D (n_items, d) array; got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"emb: expected floating-point embeddings; got dtype {t.dtype}")
    bad = ~torch.isfinite(t).all(dim=1)  # (n_items,)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().cpu().numpy()
        raise ValueError(
            f"emb: must be finite; {rows.size:,} row(s) hold NaN/inf (e.g. rows {few(rows)})"
        )
    return t


def knn_label_agreement(
    emb: Any,
    labels: Any,
    k: int = 10,
    metric: str = "cosine",
    chunk_size: int = 2048,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """k-NN label agreement of an embedding against chance (definitions in the module doc).

    emb: (n_items, d) numpy or torch, finite. labels: (n_items,) array-like of hashable
    labels, missing = None/NaN/pd.NA. metric: "cosine" (zero vectors have cosine 0 with
    everything), "euclidean" or "dot" (largest inner product).
    Returns a JSON-able dict: agreement, chance, lift, k, metric, n_items (labelled items
    used), n_missing, n_labels, and per_label = {label (str): {n, agreement, chance}}.
    """
    check_choice("metric", metric, METRICS)
    t = _embeddings(emb)
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    raw = labels.to_numpy() if isinstance(labels, pd.Series | pd.Index) else labels
    raw = np.asarray(raw, dtype=object)
    if raw.ndim != 1:
        raise ValueError(f"labels: must be 1-D (one label per item); got shape {raw.shape}")
    lab = pd.Series(raw)
    if len(lab) != t.shape[0]:
        raise ValueError(
            f"labels: expected length n_items = {t.shape[0]:,} (rows of emb); got {len(lab):,}"
        )
    missing = lab.isna().to_numpy()  # (n_items,) bool
    keep = np.flatnonzero(~missing)
    codes, uniques = pd.factorize(lab.iloc[keep])  # (n,) int codes, (n_labels,) labels
    n = keep.size
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k: must be a positive int; got {k!r}")
    if n < k + 1:
        raise ValueError(
            f"k: needs at least k + 1 = {k + 1} items with a label; got {n:,} "
            f"({int(missing.sum()):,} of {len(lab):,} labels missing)"
        )

    dev = resolve_device(device)
    x = t[torch.from_numpy(keep).to(t.device)].to(dev, torch.float32)  # (n, d)
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    xt = x.T.contiguous()  # (d, n)
    # Euclidean: argmin ||x - y||^2 = argmax 2 x.y - ||y||^2 (||x||^2 is constant per row).
    offset = -(x * x).sum(dim=1) if metric == "euclidean" else None  # (n,)
    scale = 2.0 if metric == "euclidean" else 1.0

    def score(rows: np.ndarray) -> torch.Tensor:
        s = x[torch.from_numpy(rows).to(dev)] @ xt  # (c, n) fresh buffer
        if offset is not None:
            s.mul_(scale).add_(offset)
        return s

    self_pairs = sp.csr_array(
        (np.ones(n, dtype=np.float32), np.arange(n), np.arange(n + 1)), shape=(n, n)
    )  # (n, n) identity: an item is not its own neighbour
    nbr = full_ranking_topk(
        score,
        int(k),
        exclude=self_pairs,
        users=np.arange(n),
        chunk_size=chunk_size,
        device=dev,
        copy=False,
    )  # (n, k) int64; never padded since n - 1 >= k
    same = (codes[nbr] == codes[:, None]).mean(axis=1)  # (n,) agreement of each item

    counts = np.bincount(codes, minlength=len(uniques)).astype(np.float64)  # (n_labels,) n_c
    per_label_chance = (counts - 1) / (n - 1)
    chance = float((counts * (counts - 1)).sum() / (n * (n - 1)))
    per_label_agree = np.bincount(codes, weights=same, minlength=len(uniques)) / counts
    agreement = float(same.mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = float(np.float64(agreement) / chance)
    return {
        "agreement": agreement,
        "chance": chance,
        "lift": lift,
        "k": int(k),
        "metric": metric,
        "n_items": int(n),
        "n_missing": int(missing.sum()),
        "n_labels": int(len(uniques)),
        "per_label": {
            str(u): {"n": int(c), "agreement": float(a), "chance": float(p)}
            for u, c, a, p in zip(uniques, counts, per_label_agree, per_label_chance, strict=True)
        },
    }
