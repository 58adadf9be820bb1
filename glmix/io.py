"""Save and load a fitted GLMix: a directory with model.json and arrays.npz, no pickle.

Format 2 added the GLMix parameter max_updates; format 1 folders (written before it) still
load, with max_updates = None (what they were fitted with).

model.json: format version, the GLMix parameters, every coordinate's parameters, feature
names, intercept layout and fit statistics, the coordinate-descent history and best update.
arrays.npz (read with allow_pickle=False): per coordinate `<name>.coef`, `<name>.coef_var`
(when fitted with variances), the penalty state (so a loaded model can be a prior), and for
random effects `<name>.ids`, the id map in index order (integers, floats or strings; other
id types cannot be stored portably and raise). The directory is written beside its final
place and swapped in (watchlog.io.atomic_directory): a reader sees the old model or the new.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glmix.fixed_effect import FixedEffect
from glmix.random_effect import RandomEffect
from watchlog.idmap import IdMap
from watchlog.io import CorruptFolderError, atomic_directory, read_folder_json, to_jsonable

__all__ = [
    "CorruptFolderError", "save_model", "load_model", "write_model_files", "ids_array",
    "FORMAT_VERSION",
]  # fmt: skip


FORMAT_VERSION = 2
_READABLE = (1, 2)  # 1: before max_updates
_GLMIX_PARAMS = ("fixed_design", "passes", "order", "keep_best", "verbose", "max_updates")
_COMMON = ("feature_names_", "n_features_in_", "intercept_added_", "intercept_index_")


def ids_array(index: pd.Index, what: str) -> np.ndarray:
    """Ids as an array np.load(allow_pickle=False) can read: bool, int64, uint64 (ids past
    int64's range), float64 or unicode; the values load back equal, kind included (bool ids
    as 0/1 or uint64 ids wrapped negative would match nothing after a load)."""
    values = np.asarray(index.astype(object) if isinstance(index, pd.CategoricalIndex) else index)
    if values.dtype.kind == "b":
        return values.astype(bool)
    if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        return values.astype(np.uint64)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        return values.astype(np.float64)
    if values.dtype.kind == "U":
        return values
    if all(isinstance(v, str) for v in values):
        return values.astype(str) if len(values) else np.array([], dtype="U1")
    kinds = sorted({type(v).__name__ for v in values})
    raise TypeError(
        f"save: {what} has ids of type(s) {kinds}; only integer, float or string "
        "ids can be stored without pickle (map them to strings first)"
    )


def save_model(model, path: str | os.PathLike) -> Path:
    """Write a fitted GLMix to the directory `path` (replaced atomically)."""
    model._check_fitted()
    path = Path(path)
    with atomic_directory(path) as tmp:
        write_model_files(model, tmp)
    return path


def write_model_files(model, directory: Path) -> None:
    """model.json and arrays.npz into an existing (temporary) directory; callers swap it in."""
    model._check_fitted()
    meta: dict[str, Any] = {
        "type": "GLMix",
        "format_version": FORMAT_VERSION,
        "params": {k: getattr(model, k) for k in _GLMIX_PARAMS},
        "order_": list(model.order_),
        "history_": model.history_,
        "best_": model.best_,
        "best_valid_": getattr(model, "best_valid_", None),
        "n_rows_": model.n_rows_,
        "coordinates": {},
    }
    arrays: dict[str, np.ndarray] = {}
    for name, est in model.coordinates_.items():
        entry: dict[str, Any] = {
            "kind": "fixed" if isinstance(est, FixedEffect) else "random",
            "params": est.get_params(),
            **{k: getattr(est, k) for k in _COMMON},
            "fit_stats_": est.fit_stats_,
            "has_variances": est.coef_var_ is not None,
        }
        arrays[f"{name}.coef"] = est.coef_
        if est.coef_var_ is not None:
            arrays[f"{name}.coef_var"] = est.coef_var_
        if isinstance(est, FixedEffect):
            arrays[f"{name}.pen"], arrays[f"{name}.mean"] = est._pen, est._mean
            arrays[f"{name}.l1_mask"] = est._l1_mask
        else:
            entry["id_name"] = est.ids_.name
            arrays[f"{name}.ids"] = ids_array(est.ids_.index, f"coordinate {name!r}")
            arrays[f"{name}.intercept_penalty"] = est._intercept_penalty
            entry["has_prior"] = est.prior_precision_ is not None
            if est.prior_precision_ is not None:
                arrays[f"{name}.prior_mean"] = est.prior_mean_
                arrays[f"{name}.prior_precision"] = est.prior_precision_
        meta["coordinates"][name] = entry
    np.savez(directory / "arrays.npz", **arrays)
    (directory / "model.json").write_text(json.dumps(to_jsonable(meta), indent=2) + "\n")


def load_model(path: str | os.PathLike):
    """Read a GLMix written by save_model."""
    from glmix.model import GLMix

    path = Path(path)
    if not (path / "model.json").is_file():
        raise FileNotFoundError(f"{path}: no model.json; not a folder written by GLMix.save")
    meta = read_folder_json(path / "model.json")
    if meta.get("type") != "GLMix" or meta.get("format_version") not in _READABLE:
        raise ValueError(
            f"{path}: not a GLMix model of a format this code reads {list(_READABLE)} "
            f"(type {meta.get('type')!r}, format {meta.get('format_version')!r})"
        )
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise CorruptFolderError(f"{path}/arrays.npz: unreadable ({err})") from err
    try:
        model = _model_from(meta, arrays, path, GLMix)
    except (KeyError, TypeError) as err:
        raise CorruptFolderError(
            f"{path}: incomplete GLMix folder: model.json / arrays.npz lack {err}"
        ) from err
    return model


def _check_coefficients(est, name: str, path: Path) -> None:
    """coef_ (and coef_var_) shaped (p,) or (entities, p) by the stored names and ids, finite."""
    p = len(est.feature_names_)
    want = (p,) if isinstance(est, FixedEffect) else (len(est.ids_), p)
    for what, a in (("coef", est.coef_), ("coef_var", est.coef_var_)):
        if a is None:
            continue
        if a.shape != want:
            raise CorruptFolderError(
                f"{path}/arrays.npz: {name}.{what} has shape {a.shape}, expected {want} "
                f"({'' if len(want) == 1 else f'{want[0]:,} ids x '}{p} features)"
            )
        bad = ~np.isfinite(a)
        if bad.any():
            raise CorruptFolderError(
                f"{path}/arrays.npz: {name}.{what} holds {int(bad.sum()):,} non-finite values "
                f"(e.g. at {np.argwhere(bad)[:3].tolist()})"
            )


def _model_from(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path, GLMix):
    coords: dict[str, Any] = {}
    for name, entry in meta["coordinates"].items():
        cls = FixedEffect if entry["kind"] == "fixed" else RandomEffect
        est = cls(**entry["params"])
        est.feature_names_ = tuple(entry["feature_names_"])
        est.n_features_in_ = int(entry["n_features_in_"])
        est.intercept_added_ = bool(entry["intercept_added_"])
        est.intercept_index_ = int(entry["intercept_index_"])
        est.fit_stats_ = entry["fit_stats_"]
        est.coef_ = arrays[f"{name}.coef"]
        est.coef_var_ = arrays.get(f"{name}.coef_var") if entry["has_variances"] else None
        if cls is FixedEffect:
            est._pen, est._mean = arrays[f"{name}.pen"], arrays[f"{name}.mean"]
            est._l1_mask = arrays[f"{name}.l1_mask"]
        else:
            ids = arrays[f"{name}.ids"]
            est.ids_ = IdMap(ids, name=entry["id_name"])
            if not np.array_equal(np.asarray(est.ids_.index), ids):
                raise ValueError(f"{path}: coordinate {name!r}: stored ids are not in id-map order")
            est._intercept_penalty = arrays[f"{name}.intercept_penalty"]
            est.prior_mean_ = arrays.get(f"{name}.prior_mean")
            est.prior_precision_ = arrays.get(f"{name}.prior_precision")
        _check_coefficients(est, name, path)
        coords[name] = est
    fixed_name = meta["params"]["fixed_design"]
    fixed = (
        coords.get(fixed_name)
        if meta["coordinates"].get(fixed_name, {}).get("kind") == "fixed"
        else None
    )
    random = {k: v for k, v in coords.items() if isinstance(v, RandomEffect)}
    model = GLMix(fixed=fixed, random=random, **meta["params"])
    model.coordinates_ = coords
    model.order_ = meta["order_"]
    model.history_ = meta["history_"]
    model.best_, model.best_valid_ = _kept_and_best_valid(meta)
    model.n_rows_ = meta["n_rows_"]
    return model


def _kept_and_best_valid(meta: dict[str, Any]) -> tuple[dict | None, dict | None]:
    """(best_, best_valid_) of a saved model. A folder written before best_valid_ existed
    stored the best validation update as best_ even with keep_best off, whose coefficients
    are the last update's: read back, best_ is then the last update."""
    if "best_valid_" in meta:
        return meta["best_"], meta["best_valid_"]
    history = meta["history_"]
    validated = bool(history) and "val_auc" in history[-1]
    best_valid = meta["best_"] if validated else None
    if validated and not meta["params"].get("keep_best", True):
        from glmix.model import _best

        return _best(len(history) - 1, history[-1]), best_valid
    return meta["best_"], best_valid
