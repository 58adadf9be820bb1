"""Coordinate-descent progress on disk, so a killed `GLMix.fit` resumes after its last
finished update and ends with the model an uninterrupted fit ends with.

One `.npz` file, rewritten atomically (temporary file beside it, then rename) after every
update: the coefficients (and variances) of every coordinate updated so far, those of the
update kept on validation, the running total score of the training rows (saved rather than
recomputed: the sum is accumulated update by update, and recomputing it in another order
would change its last bits), and in `meta` (JSON) the next update's index, the history, the
kept update and a signature of the fit's inputs and settings: a state whose signature
differs from the fit asking for it is not used. The signature fingerprints the inputs
themselves (`design_fingerprint`, `array_fingerprint`): every design's shape, feature names,
row structure, a strided sample of its entries and their float64 sum; every key's entity ids
and row codes; the labels, weights and offsets; so a state left by a fit on other data is
never taken for this one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from watchlog.io import atomic_path, to_jsonable

__all__ = ["FitState", "array_fingerprint", "design_fingerprint", "load_state", "save_state"]

log = logging.getLogger(__name__)


_SAMPLE = 1 << 20  # entries of a design's indices / values hashed (a strided sample)


def _update(h, a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.view(np.uint8).reshape(-1) if a.size else b"")


def _strided(a: np.ndarray) -> np.ndarray:
    return a[:: max(1, -(-a.size // _SAMPLE))]


def array_fingerprint(a: Any) -> str:
    """A hash of a whole array (labels, weights, row codes) or of a pd.Index's values."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(a, pd.Index):
        a = pd.util.hash_array(np.asarray(a))  # (n,) uint64, any id type
    _update(h, np.asarray(a))
    return h.hexdigest()


def design_fingerprint(design: Any) -> str:
    """A design (`glmix._inputs.Design`): its shape, names, CSR row pointers (whole), a
    strided sample of at most 2**20 column indices and values, and the values' float64 sum:
    linear in rows, bounded in entries, so cheap next to one coordinate update."""
    m = design.matrix
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((m.shape, tuple(design.names))).encode())
    values = m.data if sp.issparse(m) else m.reshape(-1)
    if sp.issparse(m):
        _update(h, m.indptr)
        _update(h, _strided(m.indices))
    _update(h, _strided(values))
    h.update(repr(float(values.sum(dtype=np.float64))).encode())
    return h.hexdigest()


@dataclass
class FitState:
    next_update: int
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    coefs: dict[str, tuple[np.ndarray, np.ndarray | None]]  # updated coordinates
    snapshot: dict[str, tuple[np.ndarray, np.ndarray | None]] | None  # the kept update's
    total: np.ndarray


def save_state(path: str | os.PathLike, state: FitState, signature: dict[str, Any]) -> Path:
    arrays: dict[str, np.ndarray] = {"total": state.total}
    for prefix, coefs in (("coef", state.coefs), ("snap", state.snapshot or {})):
        for name, (coef, var) in coefs.items():
            arrays[f"{prefix}/{name}"] = coef
            if var is not None:
                arrays[f"{prefix}_var/{name}"] = var
    meta = {
        "signature": signature,
        "next_update": state.next_update,
        "history": state.history,
        "best": state.best,
        "fitted": list(state.coefs),
        "snapshot": None if state.snapshot is None else list(state.snapshot),
    }
    arrays["meta"] = np.array(json.dumps(to_jsonable(meta)))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def load_state(path: str | os.PathLike, signature: dict[str, Any]) -> FitState | None:
    """The state at `path`, or None when there is none or it belongs to another fit."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta["signature"] != to_jsonable(signature):
            log.warning("GLMix state %s belongs to another fit (inputs or settings differ); "
                        "starting afresh", path)  # fmt: skip
            return None

        def coefs(prefix: str, names: list[str]) -> dict[str, tuple]:
            var = f"{prefix}_var/"
            return {n: (z[f"{prefix}/{n}"], z.get(var + n)) for n in names}

        snapshot = None if meta["snapshot"] is None else coefs("snap", meta["snapshot"])
        return FitState(
            next_update=int(meta["next_update"]),
            history=meta["history"],
            best=meta["best"],
            coefs=coefs("coef", meta["fitted"]),
            snapshot=snapshot,
            total=z["total"],
        )
