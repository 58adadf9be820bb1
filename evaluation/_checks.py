"""Input checks shared by the metric modules.

Every check raises `ValueError` (or `TypeError` for a wrong kind of object) whose message
names the argument, the rule it broke, and the expected vs. actual shape or the count of
offending entries, so a caller can fix the input without reading this code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "as_1d",
    "as_int_2d",
    "as_csr",
    "check_finite",
    "check_ks",
    "check_same_length",
    "check_choice",
    "few",
    "in_sorted",
]

_N_EXAMPLES = 5


def few(values: Iterable[Any], n: int = _N_EXAMPLES) -> str:
    """The first `n` values as a short string, for error messages."""
    values = list(values)
    head = ", ".join(str(v) for v in values[:n])
    return head + (", ..." if len(values) > n else "")


def as_1d(name: str, x: Any, dtype: Any = None, length: int | None = None) -> np.ndarray:
    """`x` as a 1-D numpy array (optionally of `dtype` and `length`)."""
    arr = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name}: must be 1-D; got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name}: expected length {length:,}; got {arr.shape[0]:,}")
    return arr


def as_int_2d(name: str, x: Any) -> np.ndarray:
    """`x` as a 2-D int64 array; floats with integral values are not accepted."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: must be a 2-D int array (n_rows, K); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: must hold integer item indices; got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def as_csr(
    name: str,
    m: Any,
    shape: tuple[int | None, int | None] = (None, None),
    rows: np.ndarray | None = None,
    structural: bool = False,
) -> sp.csr_array:
    """`m` (or its `rows`, in that order) as a canonical CSR copy: sorted indices, no duplicates.

    `shape` entries that are not None must match `m.shape`. With `structural=True` only the
    pattern matters (every stored entry counts, values are ignored); otherwise values are
    float64 gains that must be finite and >= 0, and explicit zeros are dropped (a zero gain
    is not relevant). The caller's matrix is never modified.
    """
    if not sp.issparse(m):
        raise TypeError(f"{name}: must be a scipy sparse matrix (CSR); got {type(m).__name__}")
    for axis, (want, got) in enumerate(zip(shape, m.shape, strict=True)):
        if want is not None and want != got:
            what = "rows" if axis == 0 else "columns"
            raise ValueError(
                f"{name}: expected {want:,} {what} (shape {_fmt_shape(shape)}); got shape {m.shape}"
            )
    csr = sp.csr_array(m)  # may share arrays with `m`: copied just below
    # Row selection makes a new matrix (rows in the order given); otherwise copy.
    csr = csr[rows] if rows is not None else csr.copy()
    csr = csr.astype(np.float64, copy=False)
    csr.sum_duplicates()  # also sorts the column indices of every row
    if structural:
        return csr
    bad = ~np.isfinite(csr.data) | (csr.data < 0)
    if bad.any():
        raise ValueError(
            f"{name}: stored values are gains and must be finite and >= 0; "
            f"{int(bad.sum()):,} are not (e.g. {few(csr.data[bad])})"
        )
    csr.eliminate_zeros()
    return csr


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if s is None else f"{s:,}" for s in shape) + ")"


def check_finite(name: str, x: np.ndarray) -> None:
    """No NaN or inf in `x`."""
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{name}: must be finite; {int(bad.sum()):,} NaN/inf value(s)")


def check_ks(ks: int | Sequence[int], width: int | None = None) -> tuple[int, ...]:
    """Cut-offs as a sorted tuple of distinct positive ints, each <= `width` when given."""
    ks_t = (ks,) if isinstance(ks, int | np.integer) else tuple(ks)
    if not ks_t:
        raise ValueError("ks: must hold at least one cut-off")
    bad = [k for k in ks_t if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1]
    if bad:
        raise ValueError(f"ks: cut-offs must be positive ints; got {few(bad)}")
    if width is not None:
        over = [k for k in ks_t if k > width]
        if over:
            raise ValueError(f"ks: cut-off(s) {few(over)} exceed the list width K={width}")
    return tuple(sorted({int(k) for k in ks_t}))


def check_same_length(**arrays: np.ndarray) -> int:
    """All arrays have the same first dimension; returns it."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        got = ", ".join(f"{n}={v:,}" for n, v in lengths.items())
        raise ValueError(f"lengths must match: {got}")
    return next(iter(lengths.values()))


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: must be one of {list(choices)}; got {value!r}")


def in_sorted(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """query[i] in keys, for sorted int64 `keys` (binary search; vectorized)."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=bool)
    at = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return keys[at] == query
