"""Item indexes for top-K by dot product, on faiss: exact (flat) or approximate (HNSW, IVF).

    index = ItemIndex("hnsw", hnsw_m=32, hnsw_ef_search=256).fit(course_emb)   # (m, d)
    scores, idx = index.search(learner_emb_chunk, 100)                         # (c, 100) each
    idx, scores = top_k_by_dot(learner_emb, course_emb, 100, method=index)     # the usual way

`ncf.retrieval.top_k_by_dot` is the entry point (chunks, exclusion, candidates, padding); this
module only builds and searches the faiss index. `method`:
  exact  `IndexFlatIP`: one BLAS product per block of queries and a top-k per row inside faiss
         (no (chunk, m) score matrix is kept). The default, and the only method evaluation
         uses: metrics never depend on an approximation.
  hnsw   `IndexHNSWFlat` on the usual inner-product-to-L2 reduction (Bachrach et al. 2014):
         items get an extra coordinate sqrt(R^2 - |x|^2) (R = the largest norm), queries a 0,
         so the L2 order is the inner-product order and the graph is built on a metric (an
         inner-product graph had recall@100 0.95 where this has 0.999 at 100k clustered
         courses); the returned scores are the exact dot products, recomputed. `hnsw_m` links
         per node (memory ~ m x M x 8 bytes more), `hnsw_ef_construction` at build,
         `hnsw_ef_search` (raised to k when smaller) at search: larger = better recall,
         slower. Built once per item matrix (tens of seconds per 100k courses on 1 thread);
         with several faiss threads the graph depends on thread timing, so results are
         reproducible with 1 thread only.
  ivf    `IndexIVFFlat` (inner product): k-means into `ivf_nlist` lists (default
         4 sqrt(m), at most m / 39 so every centroid has 39 training points), `ivf_nprobe`
         lists scanned per query. k-means is seeded (`seed`).
Approximate methods are meant for catalogues of 100k+ courses; at 10k courses exact search
is already fast. They may miss items (recall < 1) and may return fewer than k (padding).

faiss is optional at import time: `load_faiss()` is None when it is not installed, and
`top_k_by_dot` then runs exactly on torch; the approximate methods need it (a clear error).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "RETRIEVAL_METHODS", "ItemIndex", "check_method", "faiss_threads", "items_sha256", "load_faiss",
    "positive_int",
]  # fmt: skip

_log = logging.getLogger(__name__)

RETRIEVAL_METHODS = ("exact", "hnsw", "ivf")


def load_faiss() -> Any:
    """The faiss module, or None when it is not importable (then retrieval uses torch)."""
    loader = logging.getLogger("faiss.loader")
    if loader.level == logging.NOTSET:
        # faiss logs each CPU build it tries and fails to load ("Could not load library with
        # AVX512 support due to: ModuleNotFoundError ...") at INFO: noise that reads as an
        # error in a run's log. Its warnings still show; a caller's own level is kept.
        loader.setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def check_method(method: Any) -> str:
    if not isinstance(method, str) or method not in RETRIEVAL_METHODS:
        raise ValueError(
            f"method: must be one of {RETRIEVAL_METHODS} (or a fitted ncf.ann.ItemIndex); "
            f"got {method!r}. Use 'exact' unless the catalogue has 100k+ courses."
        )
    return method


@contextlib.contextmanager
def faiss_threads(faiss: Any) -> Iterator[None]:
    """faiss's OpenMP threads = torch's for the duration (so `threads=1` holds for both)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# faiss's flat search multiplies queries by items with BLAS only when queries x d reaches
# `distance_compute_blas_threshold` (faiss-cpu 1.15: 128,000, i.e. 2,000 queries at d = 64);
# below it a per-pair loop runs: 1,999 queries took 1.84x as long per query at 10k courses and
# 6.13x at 100k (d = 64, top-100, 1 thread; benchmarks/results/retrieval.json, part blas). So every
# chunk of fewer than 2,000 learners (the last one of a call, a service's small batch) paid it.
BLAS_FROM_QUERIES = 4


@contextlib.contextmanager
def blas_from_few_queries(faiss: Any, dim: int) -> Iterator[None]:
    """faiss's BLAS threshold at `BLAS_FROM_QUERIES` queries of dimension `dim` for the
    duration (a process-wide setting, restored after)."""
    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES * max(1, int(dim))
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


def positive_int(name: str, value: Any) -> int:
    """`value` as an int, refused unless a (non-bool) int >= 1, naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}: must be a positive int; got {value!r}")
    return int(value)


class ItemIndex:
    """A faiss index over item embeddings, searched by inner product (see module doc).

    method: 'exact' | 'hnsw' | 'ivf'. hnsw_*: graph links per node, build and search beam
    widths. ivf_nlist: k-means lists (None: 4 sqrt(m), capped at m / 39); ivf_nprobe: lists
    scanned per query. seed: k-means seed (ivf).
    After `fit(items)`: `index_` (the faiss index), `n_items_`, `dim_`, `fit_seconds_`, and
    `items_sha256_`: the SHA-256 of the items it was fitted on (`items_sha256`), which
    `check_items` (and so `top_k_by_dot`) compares with the items searched, so an index is
    never searched for other vectors (a model trained further, reloaded, refitted) of the
    same shape.
    """

    def __init__(
        self,
        method: str = "exact",
        *,
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 200,
        hnsw_ef_search: int = 128,
        ivf_nlist: int | None = None,
        ivf_nprobe: int = 32,
        seed: int = 0,
    ):
        self.method = check_method(method)
        self.hnsw_m = positive_int("hnsw_m", hnsw_m)
        self.hnsw_ef_construction = positive_int("hnsw_ef_construction", hnsw_ef_construction)
        self.hnsw_ef_search = positive_int("hnsw_ef_search", hnsw_ef_search)
        self.ivf_nlist = None if ivf_nlist is None else positive_int("ivf_nlist", ivf_nlist)
        self.ivf_nprobe = positive_int("ivf_nprobe", ivf_nprobe)
        self.seed = int(seed)

    @property
    def approximate(self) -> bool:
        return self.method != "exact"

    def get_params(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "hnsw_m": self.hnsw_m,
            "hnsw_ef_construction": self.hnsw_ef_construction,
            "hnsw_ef_search": self.hnsw_ef_search,
            "ivf_nlist": self.ivf_nlist,
            "ivf_nprobe": self.ivf_nprobe,
            "seed": self.seed,
        }

    def clone(self) -> ItemIndex:
        """The same settings, not fitted (e.g. for new item embeddings)."""
        return ItemIndex(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"ItemIndex({args})"

    @property
    def fitted(self) -> bool:
        return hasattr(self, "index_")

    def fit(self, items: Any) -> ItemIndex:
        """Build the index over items (m, d) (numpy or torch; float32 inside)."""
        faiss = load_faiss()
        if faiss is None:
            raise ImportError(
                f"ItemIndex(method={self.method!r}) needs faiss: pip install faiss-cpu "
                "(or use top_k_by_dot(method='exact'), which runs on torch without it)"
            )
        x = _float32_rows(items)
        m, d = x.shape
        if m == 0:
            raise ValueError("items: need at least one item to build an index; got shape (0, d)")
        self.items_sha256_ = items_sha256(x)
        self._checked = _remember(items)  # fitted on these: no second hash for them
        start = time.perf_counter()
        with faiss_threads(faiss), blas_from_few_queries(faiss, d):  # IVF's k-means searches
            if self.method == "exact":
                index = faiss.IndexFlatIP(d)
            elif self.method == "hnsw":
                index = faiss.IndexHNSWFlat(d + 1, self.hnsw_m)  # L2 on the lifted items
                index.hnsw.efConstruction = self.hnsw_ef_construction
                self.items_ = x  # for the exact scores of what the graph returns
                x = _lift_items(x)
            else:
                nlist = self.nlist_for(m)
                index = faiss.IndexIVFFlat(
                    faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT
                )
                index.cp.seed = self.seed
                index.train(x)
            index.add(x)
        self.index_, self.n_items_, self.dim_ = index, m, d
        self.fit_seconds_ = time.perf_counter() - start
        if self.approximate:
            _log.info("%s index over %d items (d=%d) built in %.1f s", self.method, m, d,
                      self.fit_seconds_)  # fmt: skip
        return self

    def check_items(self, items: Any, what: str = "method") -> None:
        """Refuse `items` (m, d) other than those the index was fitted on: another shape, or
        the same shape and other values (their SHA-256, `items_sha256`, differs from
        `items_sha256_`): a ValueError naming `what`. A torch tensor that passed before is
        not hashed again while it is the same object, unmodified (its `_version`), so a
        caller searching one matrix chunk by chunk pays one hash."""
        if not self.fitted:
            raise RuntimeError("ItemIndex: call fit(items) before search")
        shape = tuple(int(n) for n in items.shape)
        if shape != (self.n_items_, self.dim_):
            raise ValueError(
                f"{what}: the ItemIndex was fitted on items of shape ({self.n_items_:,}, "
                f"{self.dim_}), not these ({shape[0]:,}, {shape[1]}); fit it on the items searched"
            )
        memo = getattr(self, "_checked", None)
        if memo is not None and memo[0]() is items and memo[1] == items._version:
            return
        got = items_sha256(items)
        if got != self.items_sha256_:
            raise ValueError(
                f"{what}: the ItemIndex was fitted on other items of the same shape "
                f"({self.n_items_:,}, {self.dim_}): SHA-256 {self.items_sha256_[:12]}... of its "
                f"items, {got[:12]}... of these (the model changed since the fit: trained "
                "further, reloaded, another model); fit it on the items searched"
            )
        self._checked = _remember(items)

    def nlist_for(self, m: int) -> int:
        nlist = self.ivf_nlist if self.ivf_nlist is not None else round(4 * math.sqrt(m))
        return max(1, min(nlist, m // 39))

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores (c, k) float32, idx (c, k) int64), best first; padding -1 / -inf.
        queries: (c, d) float32 C-contiguous. allowed: optional sorted item indices, the only
        ones returned (a faiss selector; the exact path subsets the items instead)."""
        if not self.fitted:
            raise RuntimeError("ItemIndex: call fit(items) before search")
        faiss = load_faiss()
        k = min(int(k), self.n_items_)
        params: Any = None
        if self.method == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.hnsw_ef_search, k))
        elif self.method == "ivf":
            params = faiss.SearchParametersIVF(nprobe=min(self.ivf_nprobe, self.index_.nlist))
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(allowed.astype(np.int64))
            params = params if params is not None else faiss.SearchParameters()
            params.sel = sel  # `sel` is kept alive by the local name until the search ends
        lifted = self.method == "hnsw"
        if lifted:
            queries = np.hstack([queries, np.zeros((queries.shape[0], 1), np.float32)])
        with faiss_threads(faiss), blas_from_few_queries(faiss, self.dim_):
            scores, idx = self.index_.search(queries, k, params=params)
        if lifted:  # L2 distances -> the exact dot products, re-sorted best first
            scores = _dot_of(queries[:, :-1], self.items_, idx)
            order = np.argsort(-scores, axis=1, kind="stable")
            scores = np.take_along_axis(scores, order, axis=1)
            idx = np.take_along_axis(idx, order, axis=1)
        scores[idx < 0] = -np.inf  # faiss pads with -FLT_MAX (L2: +FLT_MAX)
        return scores, idx


def items_sha256(items: Any) -> str:
    """The SHA-256 (hex) of an item matrix (m, d) as an index reads it: its shape and its
    float32 values in C order (numpy or torch; a float64 matrix is hashed as float32). About
    15 ms per 100,000 x 65 matrix."""
    x = _float32_rows(items)
    digest = hashlib.sha256(np.asarray(x.shape, dtype=np.int64).tobytes())
    digest.update(x)  # C-contiguous: hashed in place, no copy
    return digest.hexdigest()


def _remember(items: Any) -> tuple | None:
    """What identifies a torch tensor's current values without reading them: the object
    (a weak reference, so a freed tensor's address reused by another never matches) and its
    version counter (bumped by every in-place change). None for numpy: always hashed."""
    if not isinstance(items, torch.Tensor) or items.is_inference():
        return None  # inference tensors keep no version counter
    return (weakref.ref(items), items._version)


def _lift_items(x: np.ndarray) -> np.ndarray:
    """(m, d + 1): [x, sqrt(R^2 - |x|^2)], every row of norm R = max |x|."""
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)  # (m,) squared norms
    extra = np.sqrt(np.maximum(sq.max() - sq, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([x, extra[:, None]]))


def _dot_of(q: np.ndarray, items: np.ndarray, idx: np.ndarray, block: int = 256) -> np.ndarray:
    """(c, k) float32 q[i] . items[idx[i, j]] (-inf where idx is -1), in row blocks so the
    (block, k, d) gather stays small."""
    out = np.full(idx.shape, -np.inf, dtype=np.float32)
    for lo in range(0, idx.shape[0], block):
        ids = idx[lo : lo + block]
        got = np.einsum("ckd,cd->ck", items[np.maximum(ids, 0)], q[lo : lo + block])
        out[lo : lo + block] = np.where(ids >= 0, got, -np.inf)
    return out


def _float32_rows(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
