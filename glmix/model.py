"""GLMix: a fixed effect plus named random-effect coordinates, fitted by coordinate descent.

    logit_i = offset_i + global(x_i) + sum_c coef_c[key_c(i)] . x_c(i)

Inputs are a mapping of design blocks (one row per event, e.g. `watchlog.design_matrices`:
{"global", "per_learner", "per_course"} FeatureBlocks) and a mapping of entity keys
({"learner": ids, "course": ids}); the fixed effect reads `designs[fixed_design]`, and the
random-effect coordinate named c reads `designs[c]` with the ids `keys[coordinate.key]`.

Coordinate descent: for each pass, for each coordinate in `order`, refit it with
offset = total score - its own score (warm-started from its previous coefficients), then
record the objective (weighted log loss summed over rows + every penalty) and, when a
validation set is given, its AUC; with keep_best, the coefficients of the update with the
best validation AUC are kept. With max_updates, descent stops after that many updates
(counted across passes), so a refit can stop exactly at the update chosen on validation
(`max_updates = best_["update"] + 1`); a coordinate not updated by then scores 0. Each update
minimizes the full objective over its own block, so the objective does not go up (up to
solver tolerance; a max_rows subsample breaks this).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone

from evaluation import auc, log_loss, per_entity_auc
from glmix._inputs import as_design, check_keys, check_labels, check_offset, check_weights
from glmix.distributed import LOCAL, Comm
from glmix.fixed_effect import FixedEffect
from glmix.random_effect import RandomEffect
from glmix.solvers import softplus
from glmix.state import FitState, array_fingerprint, design_fingerprint, load_state, save_state
from watchlog.progress import progress

__all__ = ["GLMix", "ComponentScores"]

_log = logging.getLogger(__name__)


@dataclass
class ComponentScores:
    """total: (n,) logits; components: coordinate -> (n,) its score; n_unknown: random
    coordinate -> rows whose entity was not seen in fit (they score 0)."""

    total: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)
    n_unknown: dict[str, int] = field(default_factory=dict)


def _loss_sum(y: np.ndarray, w: np.ndarray, z: np.ndarray) -> float:
    import torch

    zt = torch.from_numpy(z)
    return float((w * (softplus(zt).numpy() - y * z)).sum())


class GLMix(BaseEstimator):
    """Generalized linear mixed model for binary responses (see the module docstring).

    fixed: the fixed effect (None: no fixed effect); random: {coordinate name: RandomEffect}
      (each coordinate reads the design of the same name and keys[RandomEffect.key]).
    fixed_design: the design the fixed effect reads (default "global").
    passes: coordinate-descent passes; order: coordinate names in update order (default:
      the fixed effect, then `random` in its order); must name every coordinate once.
    max_updates: stop after this many coordinate updates, counted across passes (None: run
      every pass); coordinates not updated by then get zero coefficients (they score 0).
    keep_best: with a validation set, keep the update with the best validation AUC.
    distributed: shard the work over the default torch.distributed process group
      (glmix.distributed).

    Fitted: coordinates_ {name: fitted FixedEffect / RandomEffect}, history_ (one dict per
    update: pass, coordinate, objective, train_log_loss, val_auc, val_log_loss, seconds,
    solver stats), best_ (the update whose coefficients the model holds: the best on
    validation with keep_best, else the last), best_valid_ (the best update on validation,
    kept or not; None without a validation set), n_rows_.
    """

    def __init__(
        self,
        fixed: FixedEffect | None = None,
        random: Mapping[str, RandomEffect] | None = None,
        fixed_design: str = "global",
        passes: int = 1,
        order: Sequence[str] | None = None,
        keep_best: bool = True,
        distributed: bool = False,
        verbose: bool = False,
        max_updates: int | None = None,
    ):
        self.fixed = fixed
        self.random = random
        self.fixed_design = fixed_design
        self.passes = passes
        self.order = order
        self.max_updates = max_updates
        self.keep_best = keep_best
        self.distributed = distributed
        self.verbose = verbose

    # ---- layout -------------------------------------------------------------------------------
    def _coordinate_names(self) -> list[str]:
        names = ([self.fixed_design] if self.fixed is not None else []) + list(self.random or {})
        if not names:
            raise ValueError("GLMix: no coordinates: give a fixed effect and/or random effects")
        if self.fixed is not None and self.fixed_design in (self.random or {}):
            raise ValueError(
                f"GLMix: random coordinate {self.fixed_design!r} has the fixed effect's design name"
            )
        for name, re in (self.random or {}).items():
            if not isinstance(re, RandomEffect):
                raise TypeError(f"GLMix.random[{name!r}]: expected a RandomEffect; got {re!r}")
        if self.fixed is not None and not isinstance(self.fixed, FixedEffect):
            raise TypeError(f"GLMix.fixed: expected a FixedEffect; got {self.fixed!r}")
        return names

    def _update_order(self, names: list[str]) -> list[str]:
        order = list(self.order) if self.order is not None else names
        if sorted(order) != sorted(names):
            raise ValueError(
                f"GLMix.order: must name every coordinate exactly once, {names}; got {order}"
            )
        return order

    def _designs(self, designs: Mapping[str, Any], n: int | None, names: list[str]):
        missing = [c for c in names if c not in designs]
        if missing:
            raise KeyError(
                f"designs: no design for coordinate(s) {missing}; designs given: {sorted(designs)}"
            )
        out = {c: as_design(designs[c], f"designs[{c!r}]", n) for c in names}
        rows = {c: d.shape[0] for c, d in out.items()}
        if len(set(rows.values())) > 1:
            raise ValueError(f"designs: every design needs the same rows; got {rows}")
        return out

    def _keys(self, keys: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
        out = {}
        for name, re in (self.random or {}).items():
            if re.key not in keys:
                raise KeyError(
                    f"keys: coordinate {name!r} is keyed by {re.key!r}, which is not in keys "
                    f"({sorted(keys)})"
                )
            if re.key not in out:
                out[re.key] = check_keys(keys[re.key], n, f"keys[{re.key!r}]")
        return out

    # ---- fit ----------------------------------------------------------------------------------
    def fit(
        self,
        designs: Mapping[str, Any],
        keys: Mapping[str, Any] | None,
        y,
        sample_weight=None,
        offset=None,
        *,
        validation: tuple | None = None,
        prior: GLMix | None = None,
        state_path: str | os.PathLike | None = None,
    ) -> GLMix:
        """designs: {name: (n, p) FeatureBlock / CSR / dense}; keys: {key column: (n,) ids};
        y: (n,) 0/1; sample_weight: (n,) >= 0 (e.g. glmix.watch_time_weights); offset: (n,).
        validation: (designs, keys, y) or (designs, keys, y, offset) for AUC after every
        update. prior: a fitted GLMix whose coordinates become shrinkage priors (incremental
        training; see FixedEffect.fit / RandomEffect.fit). state_path: a file where the
        progress is saved after every update (`glmix.state`); a fit with the same inputs and
        settings finding it there resumes after the last finished update (and one that had
        finished only restores its result)."""
        t_fit = time.perf_counter()
        names = self._coordinate_names()
        order = self._update_order(names)
        if int(self.passes) < 1:
            raise ValueError(f"GLMix.passes: must be >= 1; got {self.passes!r}")
        mu = self.max_updates
        if mu is not None and (isinstance(mu, bool) or not isinstance(mu, int | np.integer)):
            raise TypeError(f"GLMix.max_updates: expected None or an int; got {mu!r}")
        if mu is not None and mu < 1:
            raise ValueError(f"GLMix.max_updates: must be None or >= 1; got {mu!r}")
        n_updates = int(self.passes) * len(order)
        if mu is not None:
            n_updates = min(n_updates, int(mu))
        y = check_labels(y)
        n = len(y)
        w = check_weights(sample_weight, n)
        o = check_offset(offset, n)
        D = self._designs(designs, n, names)
        K = self._keys(keys or {}, n)
        comm = Comm.from_torch() if self.distributed else LOCAL
        coords: dict[str, Any] = {}
        prepared: dict[str, Any] = {}
        for c in names:
            if self.fixed is not None and c == self.fixed_design:
                coords[c] = clone(self.fixed)
                pri = prior.coordinates_[c] if prior is not None else None
                prepared[c] = coords[c]._prepare(D[c], y, w, prior=pri, comm=comm)
            else:
                coords[c] = clone(self.random[c])
                prepared[c] = coords[c]._prepare(D[c], K[coords[c].key], y, w)
        val = self._validation(validation, names, coords) if validation is not None else None
        scores = {c: np.zeros(n) for c in names}
        total = o.copy()
        history: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        snapshot: dict[str, tuple] | None = None
        fitted: set[str] = set()
        signature = None
        if state_path is not None:
            signature = self._state_signature(names, order, n_updates, D, coords, prepared,
                                              y, w, o, val)  # fmt: skip
        resumed = load_state(state_path, signature) if state_path is not None else None
        first = 0
        if resumed is not None:
            first, history, best, snapshot = (
                resumed.next_update,
                resumed.history,
                resumed.best,
                resumed.snapshot,
            )
            total = resumed.total.copy()
            for c, (coef, var) in resumed.coefs.items():
                pri = prior.coordinates_[c] if prior is not None else None
                _restore_fitted(coords[c], coef, var, prepared[c], pri)
                scores[c] = self._coordinate_score(coords[c], D[c], prepared[c])
                if val is not None:
                    val["scores"][c] = self._coordinate_score(
                        coords[c], val["D"][c], None, val["codes"].get(c)
                    )
                fitted.add(c)
            _log.info("GLMix: resumed after update %d of %d", first, n_updates)
        updates = progress(range(first, n_updates), desc="GLMix coordinate descent",
                           unit="updates", logger=_log)  # fmt: skip
        for update in updates:  # pass `it`, coordinate `c`
            it, c = update // len(order), order[update % len(order)]
            t0 = time.perf_counter()
            est = coords[c]
            # in place: total is off + new below; c's old score is not held through its update
            off = np.subtract(total, scores.pop(c), out=total)
            init = est.coef_ if c in fitted else None
            if isinstance(est, FixedEffect):
                est._fit_prepared(prepared[c], off, init=init)
                new = est._margin_np(D[c])
            else:
                pri = prior.coordinates_[c] if prior is not None else None
                est._fit_prepared(prepared[c], off, init=init, prior=pri, comm=comm)
                new = est._score_codes(D[c], prepared[c].codes)
            fitted.add(c)
            scores[c] = new
            total = np.add(off, new, out=off)
            rec = self._record(it, c, est, y, w, total, coords, fitted, val, t0)
            history.append(rec)
            if self.verbose:
                nums = ", ".join(f"{k}={v:.6g}" for k, v in rec.items() if isinstance(v, float))
                _log.info("glmix pass %d %s: %s", it, c, nums)
            if best is None or (val is not None and rec["val_auc"] > best["val_auc"]):
                best = _best(len(history) - 1, rec)
                if self.keep_best and val is not None:
                    snapshot = {k: _coef_state(coords[k]) for k in fitted}
            if state_path is not None:
                coefs = {k: (coords[k].coef_, coords[k].coef_var_) for k in fitted}
                state = FitState(update + 1, history, best, coefs, snapshot, total)
                save_state(state_path, state, signature)
        for k in names:  # stopped (max_updates) before updating k: it scores 0
            if k not in fitted:
                _zero_unfitted(coords[k], prepared[k])
        best_valid = best if val is not None else None  # the best update on validation
        if self.keep_best and snapshot is not None:
            for k, state in snapshot.items():
                _restore(coords[k], state)
            for k in names:  # coordinates not yet fitted at the best update score 0
                if k not in snapshot:
                    coords[k].coef_ = np.zeros_like(coords[k].coef_)
        else:  # no validation, or keep_best off: the coefficients are the last update's
            best = _best(len(history) - 1, history[-1])
        self.coordinates_ = coords
        self.order_ = order
        self.history_ = history
        self.best_ = best
        self.best_valid_ = best_valid
        self.n_rows_ = n
        self.fit_seconds_ = time.perf_counter() - t_fit
        return self

    @staticmethod
    def _coordinate_score(est, design, prepared, codes=None) -> np.ndarray:
        if isinstance(est, FixedEffect):
            return est._margin_np(design)
        return est._score_codes(design, prepared.codes if codes is None else codes)

    def _state_signature(
        self, names, order, n_updates, D, coords, prepared, y, w, o, val
    ) -> dict[str, Any]:
        """What a saved state must match to be resumed: the settings and fingerprints of the
        inputs (`glmix.state`): each coordinate's design, each random effect's entity ids and
        row codes, the labels, weights and offsets, and the validation set likewise."""
        entities = {
            c: [array_fingerprint(coords[c].ids_.index), array_fingerprint(prepared[c].codes)]
            for c in names
            if isinstance(coords[c], RandomEffect)
        }
        out = {
            "params": repr(self.get_params(deep=False)),
            "coordinates": names,
            "order": order,
            "updates": n_updates,
            "rows": len(y),
            "designs": {c: design_fingerprint(D[c]) for c in names},
            "entities": entities,
            "y_w_offset": [array_fingerprint(a) for a in (y, w, o)],
            "validation": None,
        }
        if val is not None:
            out["validation"] = {
                "designs": {c: design_fingerprint(val["D"][c]) for c in names},
                "codes": {c: array_fingerprint(v) for c, v in val["codes"].items()},
                "y_offset": [array_fingerprint(val["y"]), array_fingerprint(val["o"])],
            }
        return out

    def _validation(self, validation, names, coords):
        if not isinstance(validation, tuple | list) or len(validation) not in (3, 4):
            raise ValueError(
                "validation: expected (designs, keys, y) or (designs, keys, y, offset)"
            )
        vd, vk, vy = validation[:3]
        vy = check_labels(vy, "validation y")
        nv = len(vy)
        if np.unique(vy).size < 2:  # before any fitting: the AUC of every update needs both
            raise ValueError(
                f"validation y: the validation AUC needs both classes; all {nv:,} labels are "
                f"{int(vy[0])}"
            )
        vo = check_offset(validation[3] if len(validation) == 4 else None, nv, "validation offset")
        D = self._designs(vd, nv, names)
        K = self._keys(vk or {}, nv)
        codes = {
            c: coords[c].codes_of(K[coords[c].key], f"validation keys[{coords[c].key!r}]")
            for c in names
            if isinstance(coords[c], RandomEffect)
        }
        return {
            "D": D,
            "codes": codes,
            "y": vy,
            "o": vo,
            "scores": {c: np.zeros(nv) for c in names},
        }

    def _record(self, it, c, est, y, w, total, coords, fitted, val, t0) -> dict[str, Any]:
        loss = _loss_sum(y, w, total)
        pen = sum(coords[k].penalty() for k in fitted)
        rec: dict[str, Any] = {
            "pass": it,
            "coordinate": c,
            "objective": loss + pen,
            "train_log_loss": loss / float(w.sum()),
        }
        if val is not None:
            if isinstance(est, FixedEffect):
                val["scores"][c] = est._margin_np(val["D"][c])
            else:
                val["scores"][c] = est._score_codes(val["D"][c], val["codes"][c])
            vt = val["o"] + sum(val["scores"].values())
            rec["val_auc"] = auc(val["y"], vt)
            rec["val_log_loss"] = log_loss(val["y"], 1.0 / (1.0 + np.exp(-vt)))
        rec["seconds"] = time.perf_counter() - t0
        rec["solver"] = {k: v for k, v in est.fit_stats_.items() if k != "seconds"}
        return rec

    # ---- scoring ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "coordinates_"):
            raise RuntimeError("GLMix is not fitted: call fit first (or GLMix.load)")

    def score_components(
        self,
        designs: Mapping[str, Any],
        keys: Mapping[str, Any] | None,
        offset=None,
        *,
        codes: Mapping[str, np.ndarray] | None = None,
    ) -> ComponentScores:
        """Each coordinate's score, their sum (+ offset) and the unknown-entity counts.

        codes: instead of keys, the rows' entity indices per random coordinate, as
        `entity_codes` gives them (a caller scoring many pairs of few entities looks the ids
        up once per entity, not once per row)."""
        self._check_fitted()
        D = self._designs(designs, None, list(self.coordinates_))
        n = next(iter(D.values())).shape[0]
        if codes is None:
            codes = self.entity_codes(self._keys(keys or {}, n))
        out = ComponentScores(total=check_offset(offset, n).copy())
        for c, est in self.coordinates_.items():
            if isinstance(est, FixedEffect):
                s = est._margin_np(est._check_design(D[c]))
            else:
                if D[c].shape[1] != est.n_features_in_:
                    raise ValueError(
                        f"designs[{c!r}]: the coordinate was fitted on {est.n_features_in_} "
                        f"features; got {D[c].shape[1]}"
                    )
                cc = self._check_codes(codes, c, n, len(est.ids_))
                s, out.n_unknown[c] = est._score_codes(D[c], cc), int((cc < 0).sum())
            out.components[c] = s
            out.total += s
        return out

    def entity_codes(self, keys: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """{random coordinate: (n_key,) int32 index of each id of keys[its key] in its id map,
        -1 for ids it did not see in fit}. keys: {key column: ids}; columns may differ in
        length (e.g. the distinct learners and the distinct courses of a batch)."""
        self._check_fitted()
        out = {}
        for c, est in self.coordinates_.items():
            if isinstance(est, RandomEffect):
                if est.key not in keys:
                    raise KeyError(
                        f"keys: coordinate {c!r} is keyed by {est.key!r}, which is not in keys "
                        f"({sorted(keys)})"
                    )
                ids = keys[est.key]
                out[c] = est.codes_of(ids, f"keys[{est.key!r}]")
        return out

    @staticmethod
    def _check_codes(codes: Mapping[str, np.ndarray], c: str, n: int, n_entities: int):
        if c not in codes:
            raise KeyError(f"codes: no entity codes for coordinate {c!r}; given {sorted(codes)}")
        cc = np.asarray(codes[c])
        if cc.shape != (n,) or (n and not np.issubdtype(cc.dtype, np.integer)):
            raise ValueError(f"codes[{c!r}]: expected ({n:,},) integers; got {cc.shape} {cc.dtype}")
        if n and (cc.min() < -1 or cc.max() >= n_entities):
            raise ValueError(f"codes[{c!r}]: entity indices must be in [-1, {n_entities})")
        return cc

    def predict_logit(self, designs, keys, offset=None) -> np.ndarray:
        """(n,) float64 logits (use score_components for the unknown-entity counts)."""
        return self.score_components(designs, keys, offset).total

    def predict_proba(self, designs, keys, offset=None) -> np.ndarray:
        """(n, 2) [P(y=0), P(y=1)], scikit-learn's layout."""
        p1 = 1.0 / (1.0 + np.exp(-self.predict_logit(designs, keys, offset)))
        return np.column_stack([1.0 - p1, p1])

    def evaluate(self, designs, keys, y, *, offset=None, per_entity: str | None = None):
        """{"auc", "log_loss", "n_unknown", and with per_entity (a key column, e.g.
        "learner"): "per_entity_auc_mean", "per_entity_auc_row_weighted", "per_entity_skipped"}."""
        y = check_labels(y)
        sc = self.score_components(designs, keys, offset)
        res: dict[str, Any] = {
            "auc": auc(y, sc.total),
            "log_loss": log_loss(y, 1.0 / (1.0 + np.exp(-sc.total))),
            "n_unknown": dict(sc.n_unknown),
        }
        if per_entity is not None:
            if keys is None or per_entity not in keys:
                raise KeyError(f"evaluate(per_entity={per_entity!r}): no such key in keys")
            ea = per_entity_auc(np.asarray(keys[per_entity]), y, sc.total)
            res.update(
                per_entity_auc_mean=ea.mean,
                per_entity_auc_row_weighted=ea.row_weighted_mean,
                per_entity_skipped=ea.n_skipped_single_class,
            )
        return res

    # ---- persistence --------------------------------------------------------------------------
    def save(self, path) -> Any:
        """Write the fitted model to the directory `path` (npz + JSON, atomic; glmix.io)."""
        from glmix.io import save_model

        return save_model(self, path)

    @classmethod
    def load(cls, path) -> GLMix:
        from glmix.io import load_model

        return load_model(path)


def _best(update: int, rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "update": update,
        "pass": rec["pass"],
        "coordinate": rec["coordinate"],
        "val_auc": rec.get("val_auc"),
        "objective": rec["objective"],
    }


def _zero_unfitted(est, prepared) -> None:
    """Zero coefficients (and the attributes fit would set) for a coordinate never updated."""
    if isinstance(est, FixedEffect):
        est.coef_ = np.zeros(len(est.feature_names_))  # (P,)
    else:
        dt = np.float32 if est.dtype == "float32" else np.float64
        est.coef_ = np.zeros((len(est.ids_), len(est.feature_names_)), dtype=dt)  # (E, P)
        est.prior_mean_ = est.prior_precision_ = None
        est._intercept_penalty = prepared.intercept_penalty
    est.coef_var_ = None
    est.fit_stats_ = {"updated": False, "reason": "max_updates reached before its turn"}


def _restore_fitted(est, coef, var, prepared, prior) -> None:
    """The fitted attributes of a coordinate restored from a saved state (glmix.state)."""
    est.coef_, est.coef_var_ = np.array(coef), None if var is None else np.array(var)
    if isinstance(est, RandomEffect):
        E, P = est.coef_.shape
        est.prior_mean_, est.prior_precision_ = est._prior_arrays(
            prior, E, P, prepared.intercept_penalty, est.coef_.dtype.type
        )
        est._intercept_penalty = prepared.intercept_penalty
    est.fit_stats_ = {"restored": True}


def _coef_state(est) -> tuple:
    return (est.coef_.copy(), None if est.coef_var_ is None else est.coef_var_.copy())


def _restore(est, state: tuple) -> None:
    est.coef_, est.coef_var_ = state
