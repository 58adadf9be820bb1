"""Input checks and conversions shared by the glmix estimators.

Every check raises with the argument's name, the rule, the count of offending entries and a
few examples, so a caller can fix the input without reading this code. Nothing is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

__all__ = [
    "Design",
    "as_design",
    "check_feature_names",
    "check_labels",
    "check_weights",
    "check_offset",
    "check_keys",
    "distinct_ids",
    "few",
    "torch_dtype",
    "INTERCEPT",
]

INTERCEPT = "intercept"  # the name watchlog.design_matrices gives its column of ones
_N_EXAMPLES = 5


def few(values: Any, n: int = _N_EXAMPLES) -> str:
    values = list(values)
    head = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in values[:n])
    return head + (", ..." if len(values) > n else "")


def _float_vector(x: Any, n: int, what: str) -> np.ndarray:
    """x as float64 of shape (n,): one value per label, or a shape error naming `what`."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{what}: expected shape ({n:,},) (one per label); got {arr.shape}")
    return arr


def _reject_rows(
    arr: np.ndarray, bad: np.ndarray, what: str, rule: str, *, example=str, suffix: str = ""
) -> None:
    """Raise if any row breaks `rule`: how many, of how many, and the first few rows."""
    if not bad.any():
        return
    pos = np.flatnonzero(bad)
    ex = ", ".join(f"row {p}: {example(arr[p])}" for p in pos[:_N_EXAMPLES])
    raise ValueError(
        f"{what}: {rule}; {int(bad.sum()):,} of {len(arr):,} are not, e.g. {ex}{suffix}"
    )


def torch_dtype(dtype: str) -> torch.dtype:
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype: must be 'float32' or 'float64'; got {dtype!r}")
    return torch.float32 if dtype == "float32" else torch.float64


@dataclass(frozen=True, eq=False)
class Design:
    """One design block: CSR (n_rows, n_features) or a dense 2-D array, and its column names."""

    matrix: sp.csr_matrix | np.ndarray
    names: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    @property
    def dense(self) -> bool:
        return isinstance(self.matrix, np.ndarray)

    def rows(self, idx: np.ndarray | slice) -> Design:
        return Design(self.matrix[idx], self.names)


def as_design(x: Any, what: str, n_rows: int | None = None) -> Design:
    """A `watchlog.FeatureBlock`, a scipy sparse matrix or a dense 2-D array, as a `Design`.

    Sparse input becomes CSR (float32 unless it is float64); dense input stays dense
    (float32 unless float64). Values must be finite; the row count must be `n_rows`.
    """
    names = None
    if hasattr(x, "matrix") and hasattr(x, "names"):  # watchlog.FeatureBlock (duck-typed)
        x, names = x.matrix, tuple(str(s) for s in x.names)
    elif isinstance(x, pd.DataFrame):  # its columns name the features (checked at predict)
        names = tuple(str(c) for c in x.columns)
    if sp.issparse(x):
        m = sp.csr_matrix(x)
        if m.dtype not in (np.float32, np.float64):
            m = m.astype(np.float32)
        data = m.data
    elif isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        m = np.asarray(x)
        if m.ndim != 2:
            raise ValueError(f"{what}: a design must be 2-D (n_rows, n_features); got {m.shape}")
        if m.dtype not in (np.float32, np.float64):
            if not (np.issubdtype(m.dtype, np.number) or m.dtype == bool):
                raise TypeError(f"{what}: expected numeric features; got dtype {m.dtype}")
            m = m.astype(np.float32)
        m = np.ascontiguousarray(m)
        data = m.reshape(-1)
    else:
        raise TypeError(
            f"{what}: expected a FeatureBlock, a scipy sparse matrix or a 2-D array; "
            f"got {type(x).__name__}"
        )
    if n_rows is not None and m.shape[0] != n_rows:
        raise ValueError(f"{what}: expected {n_rows:,} rows (one per label); got shape {m.shape}")
    bad = ~np.isfinite(data)
    if bad.any():
        pos = np.flatnonzero(bad)
        if sp.issparse(m):
            rows = np.searchsorted(m.indptr, pos, side="right") - 1
            cols = m.indices[pos]
        else:
            rows, cols = np.divmod(pos, m.shape[1])
        nm = names or tuple(f"x{j}" for j in range(m.shape[1]))
        ex = ", ".join(
            f"row {r} {nm[c]!r}={data[p]}"
            for r, c, p in list(zip(rows, cols, pos, strict=True))[:_N_EXAMPLES]
        )
        raise ValueError(
            f"{what}: features must be finite (no NaN/inf); {int(bad.sum()):,} value(s) in "
            f"{len(np.unique(rows)):,} of {m.shape[0]:,} rows are not, e.g. {ex}"
        )
    if names is None:
        names = _positional(m.shape[1])
    return Design(m, names)


def _positional(p: int) -> tuple[str, ...]:
    """The names of an unnamed design's columns (an array's): x0, x1, ..."""
    return tuple(f"x{j}" for j in range(p))


def check_feature_names(design: Design, fitted: tuple[str, ...], intercept_added: bool, what: str):
    """Refuse a named design (FeatureBlock, DataFrame) whose columns are not the fitted ones
    in the fitted order: its values would meet the wrong coefficients, silently. An unnamed
    one (an array: x0, x1, ...) on either side is taken by position, as it was fitted."""
    fitted = fitted[:-1] if intercept_added else fitted  # the appended intercept: not a column
    if design.names == fitted or _positional(design.shape[1]) in (design.names, fitted):
        return
    missing = [n for n in fitted if n not in design.names]
    extra = [n for n in design.names if n not in fitted]
    detail = (
        f"missing {missing[:5]}, not fitted {extra[:5]}" if missing or extra
        else f"the same columns in another order (first: {list(design.names[:5])})"
    )  # fmt: skip
    raise ValueError(
        f"{what}: the features are not the ones fitted ({detail}); fitted on "
        f"{list(fitted[:5])}{', ...' if len(fitted) > 5 else ''}: select and order the "
        "columns as in fit"
    )


def check_labels(y: Any, what: str = "y") -> np.ndarray:
    """0/1 labels (bool, int or float) as float64 (n,)."""
    if isinstance(getattr(y, "dtype", None), pd.api.extensions.ExtensionDtype) and hasattr(
        y, "to_numpy"
    ):  # nullable boolean / Int8: NA becomes NaN, reported below by row (not a dtype error)
        y = y.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{what}: labels must be 1-D; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what}: no rows (0 labels)")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{what}: labels must be 0/1 numbers or bools; got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    bad = ~np.isin(out, (0.0, 1.0))
    if bad.any():
        _reject_rows(
            arr, bad, what, "labels must be binary 0/1", example=lambda v: repr(v.item()),
            suffix=f" (values seen: {few(np.unique(arr[bad]))})",
        )  # fmt: skip
    return out


def check_weights(w: Any, n: int, what: str = "sample_weight") -> np.ndarray:
    """Non-negative finite weights as float64 (n,); None -> ones."""
    if w is None:
        return np.ones(n)
    arr = _float_vector(w, n, what)
    _reject_rows(arr, ~np.isfinite(arr) | (arr < 0), what, "weights must be finite and >= 0")
    if not (arr > 0).any():
        raise ValueError(f"{what}: all {n:,} weights are 0; nothing to fit")
    return arr


def check_offset(o: Any, n: int, what: str = "offset") -> np.ndarray:
    """Finite offsets as float64 (n,); None -> zeros."""
    if o is None:
        return np.zeros(n)
    arr = _float_vector(o, n, what)
    _reject_rows(arr, ~np.isfinite(arr), what, "must be finite")
    return arr


def check_keys(k: Any, n: int, what: str) -> np.ndarray | pd.Categorical:
    """Entity ids (any hashable, no missing), (n,): an ndarray, or a pd.Categorical when `k`
    is categorical (an event log's id column), kept as its codes and categories: turned into
    an array it would hold one Python object per row (~60 bytes, ~0.5 GB per 4M-row column),
    and `IdMap.to_index` / `distinct_ids` / `watchlog.idmap.positions_in` read the codes directly."""
    missing = None
    if isinstance(getattr(k, "dtype", None), pd.CategoricalDtype):
        arr = k if isinstance(k, pd.Categorical) else k.array  # Series / Index: no copy
        missing = np.asarray(arr.codes < 0)
    elif hasattr(k, "to_numpy"):  # pandas Series / Index column
        missing = np.asarray(k.isna()) if hasattr(k, "isna") else None
        arr = k.to_numpy()
    else:
        arr = np.asarray(k)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{what}: expected entity ids of shape ({n:,},); got {arr.shape}")
    if missing is None:
        missing = np.asarray(pd.isna(arr)) if arr.dtype.kind in "OfcUSM" else None
    if missing is not None and missing.any():
        pos = np.flatnonzero(missing)[:_N_EXAMPLES]
        raise ValueError(
            f"{what}: entity ids must not be missing; {int(missing.sum()):,} of {n:,} are, "
            f"e.g. rows {few(pos)}"
        )
    return arr


def distinct_ids(keys: np.ndarray | pd.Categorical) -> np.ndarray:
    """What `IdMap(keys)` needs of `check_keys` output: the keys themselves, or for a
    Categorical its distinct ids in first-seen order as the same object array `np.asarray`
    would give (one object per distinct id, not per row), so the map is the same."""
    if isinstance(keys, pd.Categorical):
        first_seen = pd.unique(keys.codes)  # (u,) codes in order of first appearance
        return np.asarray(pd.Categorical.from_codes(first_seen, dtype=keys.dtype))
    return keys
