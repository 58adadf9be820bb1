"""A random-effect coordinate: one L2 logistic regression per entity, all solved together.

`RandomEffect(key="learner", l2=10, intercept_l2=1)` fits, for every distinct value of its
key column (a learner, a course, a segment), its own coefficients on the coordinate's feature
block, with sample weights and offsets (in coordinate descent, the offset is the rest of the
model's score). How the rows reach the batched Newton solver (`glmix.solvers`):

1. ids -> dense entity indices (`watchlog.IdMap`, sorted ids), rows grouped by entity with
   one stable argsort; optionally at most `max_rows` rows per entity, a seeded uniform sample
   reweighted by n_rows / max_rows (Photon ML's active-data upper bound does the same).
2. Entities with fewer than `min_rows` rows, or zero total weight, are not solved: they keep
   their prior coefficients (zero, or a prior model's) and are counted in `fit_stats_`.
3. Feature projection (sparse designs): each entity is solved on the features that occur in
   its rows only (a coefficient whose feature never occurs has zero gradient: it stays at
   its prior mean exactly). Dense designs use every feature.
4. Entities are bucketed by (rows, active features), each rounded up to a power of two, so
   padding stays below 2x; each bucket is cut into chunks of at most `chunk_elements`
   design entries, gathered into a dense (B, F, R) tensor on the device, and solved.
5. Coefficients go back into a dense (n_entities, n_features) matrix in the id map's order.

Intercept: with fit_intercept, the design's column named "intercept" (as
`watchlog.design_matrices` makes) is the intercept; without one, a column of ones is appended
(named "intercept"). It is penalized by `intercept_l2` (default: l2; 0 = unpenalized).

Single-class entities (every positively weighted row has the same label) have no finite
unpenalized optimum. Every slope is penalized (l2 > 0 is required), so they stay finite; if
the intercept is unpenalized (intercept_l2 = 0) their intercept is penalized by l2 instead.
Either way they are counted in fit_stats_["single_class"].

Scoring: an id not seen in fit contributes 0 and is counted.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator

from glmix._inputs import (
    INTERCEPT,
    Design,
    as_design,
    check_feature_names,
    check_keys,
    check_labels,
    check_offset,
    check_weights,
    distinct_ids,
    torch_dtype,
)
from glmix.distributed import LOCAL, Comm
from glmix.solvers import newton_logistic
from watchlog.idmap import IdMap, id_kind

__all__ = ["RandomEffect", "group_rows"]

# float32: a last step of 1e-4 leaves an error of ~1e-8 (quadratic convergence), below the
# float32 noise floor (measured: max |coef - float64 coef| 5e-7 either way, 6% fewer iterations)
_DEFAULT_TOL = {"float32": 1e-4, "float64": 1e-8}


# ---- grouping rows by entity ----------------------------------------------------------------
@dataclass
class Grouping:
    """Rows grouped by entity. order: (m,) row ids sorted by entity (the active rows; all rows
    unless max_rows subsampled); start, count: (E,) each entity's slice of `order`; n_rows:
    (E,) rows before subsampling; weight_mult: (E,) n_rows / count (1 when not subsampled)."""

    order: np.ndarray
    start: np.ndarray
    count: np.ndarray
    n_rows: np.ndarray
    weight_mult: np.ndarray


def group_rows(codes: np.ndarray, n_entities: int, max_rows: int | None = None, seed: int = 0):
    """Group row ids by entity code (codes: (n,) in [0, n_entities)), vectorized.

    With max_rows, an entity with more rows keeps a uniform random sample of max_rows of them
    (seeded: one random key per row, sorted within the entity) and weight_mult = n / max_rows.
    """
    n_rows = np.bincount(codes, minlength=n_entities).astype(np.int64)
    if max_rows is None or n_rows.max(initial=0) <= max_rows:
        order = _argsort_codes(codes, n_entities)
        count = n_rows
    else:
        key = np.random.default_rng(seed).random(len(codes))
        order = np.lexsort((key, codes))  # by entity, random within it
        first = np.concatenate(([0], np.cumsum(n_rows)[:-1]))
        rank = np.arange(len(codes)) - np.repeat(first, n_rows)  # position within the entity
        order = order[rank < max_rows]
        count = np.minimum(n_rows, max_rows)
    start = np.concatenate(([0], np.cumsum(count)[:-1])).astype(np.int64)
    mult = np.where(count > 0, n_rows / np.maximum(count, 1), 1.0)
    return Grouping(order.astype(np.int64), start, count, n_rows, mult)


def _argsort_codes(codes: np.ndarray, n_entities: int) -> np.ndarray:
    """Stable argsort of entity codes in O(n): one or two passes of numpy's radix sort on
    16-bit digits (its stable sort of int32 is a merge sort, 2-3x slower at 20M rows)."""
    if n_entities <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    if n_entities > 1 << 32:
        return np.argsort(codes, kind="stable")
    o1 = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")  # low digit
    o2 = np.argsort((codes[o1] >> 16).astype(np.uint16), kind="stable")  # then high, stable
    return o1[o2]


def _pow2_ceil(x: np.ndarray) -> np.ndarray:
    return (1 << np.ceil(np.log2(np.maximum(x, 1))).astype(np.int64)).astype(np.int64)


@dataclass
class _Prepared:
    """What fit needs across coordinate-descent passes (built once, reused every pass)."""

    design: Design
    codes: np.ndarray  # (n,) int32 entity of each row
    y: np.ndarray  # (n,) float64
    w: np.ndarray  # (n,) float64
    grouping: Grouping
    n_feat: np.ndarray  # (E,) active features per entity (incl. intercept)
    solvable: np.ndarray  # (E,) bool: enough rows and positive weight
    intercept_penalty: np.ndarray  # (E,) float64
    counts: dict[str, int]


class RandomEffect(BaseEstimator):
    """Per-entity weighted L2 logistic regressions with offsets (see the module docstring).

    key: the entity column this coordinate is keyed by (GLMix looks it up in `keys`).
    l2: penalty on every slope (> 0); intercept_l2: penalty on the intercept (None: l2; 0:
      unpenalized). Objective per entity: sum_i w_i logloss_i + l2/2 |slopes|^2 +
      intercept_l2/2 intercept^2 (a weighted sum: sklearn's C = 1 / l2).
    min_rows: entities with fewer rows keep prior coefficients. max_rows: active-data upper
      bound (seeded sample + reweighting). variances: also compute coef_var_ = diag(H^-1).
    dtype: "float32" (default) or "float64"; tol: max |Newton step| to stop (default 1e-4
      in float32, 1e-8 in float64); max_iter: Newton iterations per entity.
    chunk_elements: most design entries (B * F * R) on the device at once: bounds memory.
      None: 2**20 on CPU (4 MB chunks: malloc reuses them; 64 MB ones were mapped afresh and
      page-faulted every Newton iteration, measured 5x the system time), 2**25 on CUDA.
    device: "auto" (CUDA when present), "cpu", "cuda", ...

    Fitted: ids_ (IdMap), coef_ (n_entities, n_features) in ids_ order, columns =
    feature_names_ (the design's, plus "intercept" when appended), intercept_index_ (-1: none),
    coef_var_ or None, fit_stats_ (counts: entities solved / below min_rows / single class /
    not converged, Newton iterations, seconds).
    """

    def __init__(
        self,
        key: str = "entity",
        l2: float = 1.0,
        intercept_l2: float | None = None,
        fit_intercept: bool = True,
        min_rows: int = 1,
        max_rows: int | None = None,
        variances: bool = False,
        dtype: str = "float32",
        tol: float | None = None,
        max_iter: int = 50,
        chunk_elements: int | None = None,
        seed: int = 0,
        device: str = "auto",
    ):
        self.key = key
        self.l2 = l2
        self.intercept_l2 = intercept_l2
        self.fit_intercept = fit_intercept
        self.min_rows = min_rows
        self.max_rows = max_rows
        self.variances = variances
        self.dtype = dtype
        self.tol = tol
        self.max_iter = max_iter
        self.chunk_elements = chunk_elements
        self.seed = seed
        self.device = device

    # ---- parameters ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not (np.isfinite(self.l2) and self.l2 > 0):
            raise ValueError(
                f"RandomEffect(key={self.key!r}).l2: must be > 0 (per-entity problems with few "
                f"rows need it to be well posed); got {self.l2!r}"
            )
        il2 = self.intercept_l2
        if il2 is not None and not (np.isfinite(il2) and il2 >= 0):
            raise ValueError(f"RandomEffect.intercept_l2: must be >= 0 or None; got {il2!r}")
        if int(self.min_rows) < 1:
            raise ValueError(f"RandomEffect.min_rows: must be >= 1; got {self.min_rows!r}")
        if self.max_rows is not None and int(self.max_rows) < 1:
            raise ValueError(f"RandomEffect.max_rows: must be >= 1 or None; got {self.max_rows!r}")
        torch_dtype(self.dtype)
        if int(self.max_iter) < 1 or (
            self.chunk_elements is not None and int(self.chunk_elements) < 1
        ):
            raise ValueError("RandomEffect: max_iter and chunk_elements must be >= 1")

    @property
    def _tol(self) -> float:
        return float(self.tol) if self.tol is not None else _DEFAULT_TOL[self.dtype]

    def _device(self) -> torch.device:
        from evaluation import resolve_device

        return resolve_device(self.device)

    def _chunk_elements(self) -> int:
        if self.chunk_elements is not None:
            return int(self.chunk_elements)
        return 2**25 if self._device().type == "cuda" else 2**20

    # ---- fit ----------------------------------------------------------------------------------
    def fit(
        self,
        X,
        entity,
        y,
        sample_weight=None,
        offset=None,
        *,
        prior: RandomEffect | None = None,
        comm: Comm = LOCAL,
    ) -> RandomEffect:
        """Fit every entity's coefficients.

        X: (n, p) FeatureBlock / CSR / dense design; entity: (n,) ids (any hashable);
        y: (n,) 0/1; sample_weight: (n,) >= 0 (default 1); offset: (n,) (default 0).
        prior: a fitted RandomEffect on the same features: its coefficients become the
          means the new ones shrink toward, with precision 1 / its coef_var_ (when it was
          fitted with variances=True; otherwise this coordinate's l2 / intercept_l2).
          Entities unknown to the prior shrink toward 0 as usual.
        comm: solve only this rank's entities and sum the coefficients across ranks.
        """
        y = check_labels(y)
        n = len(y)
        design = as_design(X, f"RandomEffect(key={self.key!r}) X", n)
        prep = self._prepare(
            design,
            check_keys(entity, n, f"entity ({self.key})"),
            y,
            check_weights(sample_weight, n),
        )
        self._fit_prepared(prep, check_offset(offset, n), prior=prior, comm=comm)
        return self

    def _prepare(self, design: Design, keys, y: np.ndarray, w: np.ndarray):
        """Id map, grouping, active features, solvability and intercept penalties."""
        self._check_params()
        names = list(design.names)
        p = design.shape[1]
        added = bool(self.fit_intercept) and INTERCEPT not in names
        if p == 0 and not added:
            raise ValueError(
                f"RandomEffect(key={self.key!r}): empty coordinate: the design has no features "
                "and fit_intercept=False, so there is nothing to fit"
            )
        self.ids_ = IdMap(distinct_ids(keys), name=self.key)
        codes = self.ids_.to_index(keys)
        E = len(self.ids_)
        self.n_features_in_ = p
        self.feature_names_ = tuple(names + ([INTERCEPT] if added else []))
        self.intercept_added_ = added
        self.intercept_index_ = self.feature_names_.index(INTERCEPT) if self.fit_intercept else -1
        g = group_rows(codes, E, None if self.max_rows is None else int(self.max_rows), self.seed)
        if counts_subsampled := int((g.count < g.n_rows).sum()):  # weights of the sample
            ent = np.repeat(np.arange(E), g.count)  # (m,) entity of each active row
            wa = w[g.order] * g.weight_mult[ent]
            wsum = np.bincount(ent, weights=wa, minlength=E)
            wpos = np.bincount(ent, weights=wa * y[g.order], minlength=E)
        else:  # every row is active: no gather needed
            wsum = np.bincount(codes, weights=w, minlength=E)
            wpos = np.bincount(codes, weights=w * y, minlength=E)
        single = (wsum > 0) & ((wpos <= 0) | (wpos >= wsum))
        solvable = (g.n_rows >= int(self.min_rows)) & (wsum > 0)
        il2 = self.l2 if self.intercept_l2 is None else self.intercept_l2
        icpt_pen = np.full(E, float(il2))
        if il2 == 0:
            icpt_pen[single] = self.l2  # no finite optimum otherwise (module docstring)
        n_feat = self._active_features(design, g, E, added)
        counts = {
            "entities": E,
            "rows": int(len(y)),
            "active_rows": int(len(g.order)),
            "below_min_rows": int((g.n_rows < int(self.min_rows)).sum()),
            "zero_weight": int(((wsum <= 0) & (g.n_rows >= int(self.min_rows))).sum()),
            "solvable": int(solvable.sum()),
            "single_class": int((single & solvable).sum()),
            "single_class_intercept_penalized": int((single & solvable).sum()) if il2 == 0 else 0,
            "subsampled": counts_subsampled,
        }
        return _Prepared(design, codes, y, w, g, n_feat, solvable, icpt_pen, counts)

    def _active_features(self, design: Design, g: Grouping, E: int, added: bool) -> np.ndarray:
        """(E,) number of features each entity is solved on (dense: all; CSR: those present)."""
        p = design.shape[1]
        if design.dense:
            return np.full(E, p + added, dtype=np.int64)
        X = design.matrix
        out = np.zeros(E, dtype=np.int64)
        block = max(1, 2**24 // max(p, 1))  # entities per block: (block, p) presence bitmap
        end = g.start + g.count  # (E,); at most 2**20 rows gathered per block (its temporaries
        # take ~40 bytes per design entry: a block of 2**22 rows set a 4M-row fit's peak)
        e0 = 0
        while e0 < E:
            e1 = min(E, e0 + block, int(np.searchsorted(end, g.start[e0] + 2**20, "right")))
            e1 = max(e1, e0 + 1)
            lo, hi = g.start[e0], end[e1 - 1]
            sub = X[g.order[lo:hi]]
            ent = np.repeat(np.arange(e1 - e0), g.count[e0:e1])  # (rows,) local entity
            present = np.zeros((e1 - e0, p), dtype=bool)
            present[np.repeat(ent, np.diff(sub.indptr)), sub.indices] = True
            out[e0:e1] = present.sum(1)
            e0 = e1
        return out + added

    def _fit_prepared(
        self,
        prep: _Prepared,
        offset: np.ndarray,
        *,
        init: np.ndarray | None = None,
        prior: RandomEffect | None = None,
        comm: Comm = LOCAL,
    ) -> None:
        t0 = time.perf_counter()
        dev, dt = self._device(), torch_dtype(self.dtype)
        np_dt = np.float32 if self.dtype == "float32" else np.float64
        E, P = len(self.ids_), len(self.feature_names_)
        mean, prec = self._prior_arrays(prior, E, P, prep.intercept_penalty, np_dt)
        base = np.zeros((E, P), dtype=np_dt) if mean is None else mean
        coef = base.copy() if init is None else init.astype(np_dt, copy=True)
        var = None
        if self.variances:
            var = np.empty((E, P), dtype=np_dt)
            if prec is not None:
                var[:] = 1.0 / prec
            else:
                var[:] = 1.0 / self.l2
                if self.intercept_index_ >= 0:
                    var[:, self.intercept_index_] = 1.0 / np.maximum(prep.intercept_penalty, 1e-300)
        if not prep.solvable.any():
            warnings.warn(
                f"RandomEffect(key={self.key!r}): no entity has >= min_rows={self.min_rows} rows "
                f"with positive weight; all {E:,} entities keep their prior coefficients",
                stacklevel=3,
            )
        todo = prep.solvable & comm.owns(E)
        it_hist = np.zeros(int(self.max_iter) + 1, dtype=np.int64)
        n_conv = n_stalled = n_chunks = 0
        for ents, R, F in self._chunks(prep, np.flatnonzero(todo)):
            XT, Y, W, Off, colmap = self._chunk_tensors(prep, offset, ents, R, F)
            pen, mu, beta0 = self._chunk_penalty(prep, ents, colmap, mean, prec, coef)
            T = lambda a: torch.from_numpy(a).to(dev, dt)  # noqa: E731
            res = newton_logistic(
                XT.to(dev, dt),
                T(Y),
                T(W),
                T(Off),
                T(pen),
                T(mu),
                T(beta0),
                tol=self._tol,
                max_iter=int(self.max_iter),
                variances=self.variances,
            )
            valid = colmap >= 0
            rows_e = np.broadcast_to(ents[:, None], colmap.shape)[valid]
            coef[rows_e, colmap[valid]] = res.coef.cpu().numpy()[valid]
            if var is not None:
                var[rows_e, colmap[valid]] = res.variance.cpu().numpy()[valid]
            it_hist += np.bincount(res.n_iter.cpu().numpy(), minlength=len(it_hist))
            n_conv += int(res.converged.sum())
            n_stalled += int(res.stalled.sum())
            n_chunks += 1
        if comm.distributed:  # every entity is solved on exactly one rank: sums are exact
            solved = comm.allreduce_array(todo.astype(np.int32)) > 0
            coef = np.where(
                solved[:, None], comm.allreduce_array(np.where(todo[:, None], coef, 0)), base
            )
            if var is not None:
                var = np.where(
                    solved[:, None], comm.allreduce_array(np.where(todo[:, None], var, 0)), var
                )
            it_hist = comm.allreduce_array(it_hist)
            n_conv, n_stalled = (
                int(v) for v in comm.allreduce_array(np.array([n_conv, n_stalled]))
            )
        n_solved = int(it_hist.sum())
        self.coef_ = coef
        self.coef_var_ = var
        self.prior_mean_, self.prior_precision_ = mean, prec
        self._intercept_penalty = prep.intercept_penalty
        iters = np.repeat(np.arange(len(it_hist)), it_hist)
        self.fit_stats_ = {
            **prep.counts,
            "solved": n_solved,
            "converged": n_conv,
            "stalled": n_stalled,
            "max_iter_reached": n_solved - n_conv - n_stalled,
            "newton_iterations_mean": float(iters.mean()) if n_solved else 0.0,
            "newton_iterations_max": int(iters.max()) if n_solved else 0,
            "chunks": n_chunks,
            "seconds": time.perf_counter() - t0,
        }

    def _prior_arrays(self, prior, E: int, P: int, icpt_pen: np.ndarray, np_dt):
        """(mean, precision) (E, P) from a prior model, or (None, None)."""
        if prior is None:
            return None, None
        if not hasattr(prior, "coef_") or tuple(prior.feature_names_) != self.feature_names_:
            raise ValueError(
                f"RandomEffect(key={self.key!r}).fit(prior=...): the prior must be a fitted "
                "RandomEffect with the same feature names (in the same order)"
            )
        rows = prior.ids_.to_index(self.ids_.index, strict=False)  # (E,) -1: new entity
        known = rows >= 0
        mean = np.zeros((E, P), dtype=np_dt)
        mean[known] = prior.coef_[rows[known]]
        prec = np.full((E, P), self.l2, dtype=np_dt)
        if self.intercept_index_ >= 0:
            prec[:, self.intercept_index_] = icpt_pen
        if prior.coef_var_ is not None:
            prec[known] = 1.0 / np.maximum(prior.coef_var_[rows[known]], 1e-12)
        return mean, prec

    # ---- chunks -------------------------------------------------------------------------------
    def _chunks(self, prep: _Prepared, ents: np.ndarray):
        """Yield (entities, R, F): buckets by (rows, active features) rounded up to powers of
        two (F capped at the feature count), cut so that B * F * max(R, F, p) fits in
        chunk_elements."""
        if len(ents) == 0:
            return
        P = len(self.feature_names_)
        R = _pow2_ceil(prep.grouping.count[ents])
        F = np.minimum(_pow2_ceil(prep.n_feat[ents]), P)
        order = np.lexsort((ents, F, R))
        ents, R, F = ents[order], R[order], F[order]
        cut = np.flatnonzero((np.diff(R) != 0) | (np.diff(F) != 0)) + 1
        width = 0 if prep.design.dense else P  # CSR chunks hold a (B, P) presence bitmap
        for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(ents)], strict=True):
            r, f = int(R[lo]), int(F[lo])
            per = max(1, self._chunk_elements() // (f * max(r, f, width)))
            for a in range(lo, hi, per):
                yield ents[a : min(hi, a + per)], r, f

    def _chunk_tensors(self, prep: _Prepared, offset: np.ndarray, ents: np.ndarray, R: int, F: int):
        """Dense padded tensors of one chunk: XT (B, F, R) torch; Y, W, Off (B, R); colmap (B, F)
        = the design column of each local feature (-1: padding)."""
        g, design = prep.grouping, prep.design
        B = len(ents)
        cnt = g.count[ents]
        slot = np.repeat(np.arange(B), cnt)  # (rows,) chunk entity of each row
        pos = np.arange(len(slot)) - np.repeat(np.cumsum(cnt) - cnt, cnt)  # row within entity
        rows = g.order[np.repeat(g.start[ents], cnt) + pos]  # (rows,) row ids
        Y, W, Off = (np.zeros((B, R)) for _ in range(3))
        Y[slot, pos] = prep.y[rows]
        W[slot, pos] = prep.w[rows] * g.weight_mult[ents][slot]
        Off[slot, pos] = offset[rows]
        p = design.shape[1]
        P = len(self.feature_names_)
        XT = torch.zeros(B, F, R, dtype=torch.float64 if self.dtype == "float64" else torch.float32)
        ts, tp = torch.from_numpy(slot), torch.from_numpy(pos)
        if design.dense:  # every feature active: local column = design column
            colmap = np.broadcast_to(np.arange(F), (B, F)).copy()
            colmap[:, P:] = -1
            if p:
                XT[ts, :p, tp] = torch.from_numpy(design.matrix[rows]).to(XT.dtype)
            if self.intercept_added_:
                XT[ts, p, tp] = 1.0
            return XT, Y, W, Off, colmap
        sub = design.matrix[rows]  # CSR row gather, (rows, p)
        per_row = np.diff(sub.indptr)
        nslot, npos = np.repeat(slot, per_row), np.repeat(pos, per_row)
        present = np.zeros((B, P), dtype=bool)
        present[nslot, sub.indices] = True
        if self.intercept_added_:
            present[:, p] = True
        local = np.cumsum(present, axis=1) - 1  # (B, P) local index of each present column
        colmap = np.full((B, F), -1, dtype=np.int64)
        bb, jj = np.nonzero(present)
        colmap[bb, local[bb, jj]] = jj
        lc = torch.from_numpy(local[nslot, sub.indices])
        XT.index_put_(
            (torch.from_numpy(nslot), lc, torch.from_numpy(npos)),
            torch.from_numpy(sub.data).to(XT.dtype),
            accumulate=True,  # duplicate entries of a non-canonical CSR add up, as in X @ b
        )
        if self.intercept_added_:
            XT[ts, torch.from_numpy(local[slot, p]), tp] = 1.0
        return XT, Y, W, Off, colmap

    def _chunk_penalty(self, prep, ents, colmap, mean, prec, coef):
        """penalty, prior mean and starting point of one chunk, each (B, F)."""
        valid = colmap >= 0
        cm = np.where(valid, colmap, 0)
        rows = ents[:, None]
        if prec is not None:
            pen = np.where(valid, prec[rows, cm], 1.0)
            mu = np.where(valid, mean[rows, cm], 0.0)
        else:
            pen = np.where(valid, float(self.l2), 1.0)
            if self.intercept_index_ >= 0:
                is_icpt = colmap == self.intercept_index_
                pen = np.where(is_icpt, prep.intercept_penalty[ents][:, None], pen)
            mu = np.zeros(colmap.shape)
        beta0 = np.where(valid, coef[rows, cm], 0.0)
        return pen, mu, beta0

    # ---- penalty and scores -------------------------------------------------------------------
    def penalty(self) -> float:
        """This coordinate's penalty at its coefficients: 1/2 sum lam (coef - mean)^2."""
        c = self.coef_.astype(np.float64)
        if self.prior_precision_ is not None:
            return float(0.5 * (self.prior_precision_ * (c - self.prior_mean_) ** 2).sum())
        sq = c**2
        total = self.l2 * sq.sum()
        if self.intercept_index_ >= 0:
            j = self.intercept_index_
            total += ((self._intercept_penalty - self.l2) * sq[:, j]).sum()
        return float(0.5 * total)

    def _score_codes(self, design: Design, codes: np.ndarray, chunk_rows: int = 1 << 18):
        """(n,) float64 scores of rows whose entity index is `codes` (-1: unknown -> 0), by
        blocks of chunk_rows rows (each row's sum is the same whatever the blocks; a block's
        temporaries take ~30 bytes per design entry)."""
        n = design.shape[0]
        p = design.shape[1]
        C = self.coef_
        known = codes >= 0
        cc = np.where(known, codes, 0)
        out = np.zeros(n)
        for lo in range(0, n, chunk_rows):
            hi = min(n, lo + chunk_rows)
            c = cc[lo:hi]
            if design.dense:
                out[lo:hi] = np.einsum("ij,ij->i", design.matrix[lo:hi], C[c, :p], dtype=np.float64)
            else:
                seg = design.matrix[lo:hi]
                r = np.repeat(np.arange(hi - lo), np.diff(seg.indptr))  # (nnz,) local row
                vals = seg.data.astype(np.float64) * C[c[r], seg.indices]
                out[lo:hi] = np.bincount(r, weights=vals, minlength=hi - lo)
            if self.intercept_added_:
                out[lo:hi] += C[c, p]
        out[~known] = 0.0
        return out

    def _score_keys(self, design: Design, keys) -> tuple[np.ndarray, int]:
        if not hasattr(self, "coef_"):
            raise RuntimeError(f"RandomEffect(key={self.key!r}) is not fitted: call fit first")
        if design.shape[1] != self.n_features_in_:
            raise ValueError(
                f"RandomEffect(key={self.key!r}) X: fitted on {self.n_features_in_} features; "
                f"got {design.shape[1]}"
            )
        what = f"RandomEffect(key={self.key!r}) X"
        check_feature_names(design, self.feature_names_, self.intercept_added_, what)
        codes = self.codes_of(keys)
        return self._score_codes(design, codes), int((codes < 0).sum())

    def codes_of(self, ids, what: str | None = None) -> np.ndarray:
        """(n,) int32 index of each id in the fitted id map, -1 for ids unseen in fit. Ids of
        another kind than the fitted ones (text against integers: "1" never matches 1) are
        refused: every row would be unknown and score 0, silently."""
        if not hasattr(self, "ids_"):
            raise RuntimeError(f"RandomEffect(key={self.key!r}) is not fitted: call fit first")
        if not len(ids):
            return np.zeros(0, np.int32)
        arr = ids if hasattr(ids, "dtype") else np.asarray(ids)
        fitted = id_kind(self.ids_.index.dtype, self.ids_.index)
        given = id_kind(arr.dtype, arr)
        if fitted is not None and given is not None and fitted != given:
            head = np.asarray(arr[:3]).tolist()
            raise TypeError(
                f"{what or f'entity ({self.key})'}: {given} ids, but RandomEffect(key="
                f"{self.key!r}) was fitted on {fitted} ids (e.g. {head}): no id would match "
                "and every row would score 0; convert one side (.astype(str) or .astype(int))"
            )
        return self.ids_.to_index(ids, strict=False)

    def decision_function(self, X, entity, *, return_unknown: bool = False):
        """(n,) float64 scores x_i . coef[entity_i]; ids unseen in fit score 0. With
        return_unknown, also the number of rows whose id was unknown."""
        design = as_design(X, f"RandomEffect(key={self.key!r}) X")
        keys = check_keys(entity, design.shape[0], f"entity ({self.key})")
        s, unknown = self._score_keys(design, keys)
        return (s, unknown) if return_unknown else s
