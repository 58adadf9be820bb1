"""Top-K retrieval by dot product: learner embeddings against course embeddings, in chunks.

    idx, scores = top_k_by_dot(learner_emb, course_emb, 100, exclude=watched_csr)
    idx, scores = similar_by_cosine(course_emb, [3, 17], 10)   # neighbours of courses 3 and 17

Scores of one chunk of queries are computed by one matmul, `(chunk, d) @ (d, m)`, then
masked and cut by `torch.topk`; the chunk loop, the exclusion and the NaN check are those of
`evaluation.full_ranking_topk`, so memory is bounded by about `chunk_size x m` float32 scores
(plus a `chunk_size x m` bool mask when per-row candidates are given), never `n x m`.

Result convention (both functions): `idx` (n, N) int64 item indices and `scores` (n, N)
float32, best first. When a row has fewer than N allowed items (N > m, candidates, exclusion)
the list is padded at the end with index -1 and score -inf. Ties are broken by `torch.topk`
(unspecified order). The same code runs on CPU and CUDA (`device="auto"`); results come back
as numpy arrays on the CPU.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from evaluation import full_ranking_topk, resolve_device
from evaluation._checks import few
from watchlog.progress import progress

__all__ = ["top_k_by_dot", "similar_by_cosine"]

_log = logging.getLogger(__name__)

DEFAULT_CHUNK = 4096


def _as_matrix(name: str, x: Any, d: int | None = None) -> torch.Tensor:
    """`x` (numpy or torch) as a 2-D float tensor, without copying when it already is one."""
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: must be a numpy array or torch tensor; got {type(x).__name__}")
    want = "(n, d)" if name == "queries" else "(m, d)"
    if d is not None:
        want = want.replace("d)", f"d={d})")
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape {want}; got {tuple(t.shape)}")
    if d is not None and t.shape[1] != d:
        raise ValueError(
            f"{name}: expected shape {want} (d = items.shape[1]); got {tuple(t.shape)}"
        )
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected floating-point embeddings; got dtype {t.dtype}")
    bad = ~torch.isfinite(t).all(dim=1)  # (rows,) any NaN/inf in the row
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().cpu().numpy()
        raise ValueError(
            f"{name}: must be finite; {rows.size:,} row(s) hold NaN/inf (e.g. rows {few(rows)})"
        )
    return t


def _check_csr(name: str, m: Any, shape: tuple[int, int]) -> sp.csr_array:
    if not sp.issparse(m):
        raise TypeError(f"{name}: must be a scipy sparse matrix (CSR); got {type(m).__name__}")
    if m.shape != shape:
        raise ValueError(f"{name}: expected shape (n_queries, n_items) = {shape}; got {m.shape}")
    return sp.csr_array(m)


def _check_item_index(name: str, idx: Any, m: int) -> np.ndarray:
    arr = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx)
    if arr.ndim != 1:
        raise ValueError(f"{name}: must be a 1-D array of item indices; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: must hold integer item indices; got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = arr[(arr < 0) | (arr >= m)]
    if bad.size:
        raise ValueError(
            f"{name}: item indices must be in [0, {m:,}); {bad.size:,} are not (e.g. {few(bad)})"
        )
    return arr


def _track(chunks, n_chunks: int):
    """The chunk loop with progress (silent unless it runs for a while: `watchlog.progress`)."""
    return progress(chunks, total=n_chunks, desc="top-k retrieval", unit="chunks", logger=_log)


def top_k_by_dot(
    queries: Any,
    items: Any,
    N: int,
    *,
    exclude: Any = None,
    candidates: Any = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """The N items with the largest `queries[i] @ items[j]` for every query row i.

    queries: (n, d) and items: (m, d), numpy or torch, finite; computed in float32.
    exclude: optional CSR (n, m); the stored entries of row i (e.g. courses already watched)
        are never returned for query i. Values are ignored (an explicit zero still excludes).
    candidates: optional restriction of the items that may be returned, either
        * a 1-D array of item indices (the same allowed set for every query; duplicates are
          harmless): scores are computed against those items only, so a small set is cheap;
        * a CSR (n, m) whose stored entries in row i are query i's allowed items (values
          ignored); the full row is scored and everything else masked.
        `exclude` applies on top of `candidates`.
    chunk_size: queries per matmul; memory ~ chunk_size x m float32 scores on `device`.
    Returns (idx (n, N) int64, scores (n, N) float32), best first; rows with fewer than N
    allowed items are padded with -1 / -inf (see module doc).
    """
    if isinstance(N, bool) or not isinstance(N, int | np.integer) or N < 1:
        raise ValueError(f"N: must be a positive int; got {N!r}")
    N = int(N)
    dev = resolve_device(device)
    it = _as_matrix("items", items)
    m, d = int(it.shape[0]), int(it.shape[1])
    q = _as_matrix("queries", queries, d)
    n = int(q.shape[0])
    ex = None if exclude is None else _check_csr("exclude", exclude, (n, m))

    allowed: np.ndarray | None = None  # global candidate set, (m_sub,) sorted item indices
    per_row: sp.csr_array | None = None
    if candidates is not None:
        if sp.issparse(candidates):
            per_row = _check_csr("candidates", candidates, (n, m))
        else:
            allowed = np.unique(_check_item_index("candidates", candidates, m))
            if ex is not None:
                ex = ex[:, allowed]  # (n, m_sub): same columns as the restricted items
            it = it[torch.from_numpy(allowed).to(it.device)]  # (m_sub, d)

    item_t = it.to(dev, torch.float32).T.contiguous()  # (d, m_sub) on the device, once
    n_cols = int(item_t.shape[1])

    def score(users: np.ndarray) -> torch.Tensor:
        rows = torch.from_numpy(users).to(q.device)
        s = q.index_select(0, rows).to(dev, torch.float32) @ item_t  # (c, m_sub) fresh buffer
        if per_row is not None:
            sub = per_row[users]  # (c, m) pattern of allowed items
            blocked = torch.ones(s.shape, dtype=torch.bool, device=dev)  # (c, m)
            r = np.repeat(np.arange(users.shape[0], dtype=np.int64), np.diff(sub.indptr))
            blocked[
                torch.from_numpy(r).to(dev), torch.from_numpy(sub.indices.astype(np.int64)).to(dev)
            ] = False
            s.masked_fill_(blocked, float("-inf"))
        return s

    if n_cols == 0:  # nothing allowed at all: every list is padding
        return np.full((n, N), -1, dtype=np.int64), np.full((n, N), -np.inf, dtype=np.float32)
    idx, scores = full_ranking_topk(
        score,
        N,
        users=np.arange(n, dtype=np.int64),
        exclude=ex,
        chunk_size=chunk_size,
        device=dev,
        return_scores=True,
        copy=False,  # `score` returns a fresh buffer every call: exclusion may write into it
        track=_track,
    )
    if allowed is not None:
        hit = idx >= 0
        idx[hit] = allowed[idx[hit]]  # back to global item indices
    return idx, scores.astype(np.float32, copy=False)


def similar_by_cosine(
    items: Any,
    item_idx: Any,
    N: int,
    *,
    candidates: Any = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """The N items most cosine-similar to each of `item_idx`, the item itself excluded.

    items: (m, d) embeddings; item_idx: (q,) int indices into items (repeats allowed).
    candidates: as in `top_k_by_dot` (a 1-D global set, or a CSR (q, m)).
    A zero-norm embedding has cosine 0 with everything (it is normalized to the zero vector).
    Returns (idx (q, N) int64, cosine (q, N) float32), best first, padded with -1 / -inf
    when fewer than N other items are allowed.
    """
    it = _as_matrix("items", items)
    m = int(it.shape[0])
    query = _check_item_index("item_idx", item_idx, m)
    unit = torch.nn.functional.normalize(it.to(torch.float32), dim=1)  # (m, d), rows of norm 1 or 0
    own = sp.csr_array(
        (np.ones(query.size, dtype=np.float32), query, np.arange(query.size + 1)),
        shape=(query.size, m),
    )  # (q, m): each query's own item, excluded
    return top_k_by_dot(
        unit[torch.from_numpy(query).to(unit.device)],
        unit,
        N,
        exclude=own,
        candidates=candidates,
        chunk_size=chunk_size,
        device=device,
    )
