"""Feature encoding for GLMix: sparse design matrices from the learner and course tables.

`FeatureEncoder` turns one entity table (learners or courses; row i = entity index i) into a
CSR float32 matrix (n_rows, n_features) with readable feature names:

    categorical  one-hot             category=Data Science, category=<other>, category=<missing>
    multi-hot    '|'-separated sets  skills=Python, skills=<other>, skills=<missing>
    numeric      standardized        duration_seconds, duration_seconds=<missing>
    intercept    a column of ones    intercept

Its fitted state is plain JSON-able data (`to_dict` / `from_dict`), never a pickle, which is
why it is not scikit-learn's ColumnTransformer.

Crosses and the per-event GLMix designs built from these blocks are in `watchlog.design`.
All of it is vectorized: dictionary codes / split + flatten; no Python loop per row. Text work
(split, strip, look-ups) is done by Arrow compute kernels, since pandas' `str.split` runs a
Python call per row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from watchlog.report import DataReport

__all__ = ["FeatureBlock", "FeatureEncoder", "OTHER", "MISSING", "INTERCEPT", "TableRowsError"]

OTHER = "<other>"  # rare categories (below min_frequency) and, when present, unseen ones
MISSING = "<missing>"  # the missing-value indicator feature
INTERCEPT = "intercept"
_N_EXAMPLES = 5
_DAY_NS = 86_400 * 10**9


class TableRowsError(ValueError):
    """A table's rows break a rule; `rows` holds the positions (0-based, in the table given)
    of the rows the message names as examples, so a caller that passed a subset of its own
    table can name its own ids there (`glmix.GLMixScorer` does)."""

    def __init__(self, message: str, rows: Any = ()):
        super().__init__(message)
        self.rows = [int(r) for r in rows]


# ---- a matrix with its names ----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FeatureBlock:
    """A CSR float32 (n_rows, n_features) matrix, one name per column, and named groups.

    `groups` maps a group (a source column, a term of a design) to its [start, stop) column
    range, so that callers can select e.g. the `category` features of a course block.
    """

    matrix: sp.csr_matrix
    names: tuple[str, ...]
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not sp.issparse(self.matrix) or self.matrix.format != "csr":
            raise TypeError(f"FeatureBlock.matrix: expected CSR, got {type(self.matrix).__name__}")
        if self.matrix.dtype != np.float32:
            raise TypeError(f"FeatureBlock.matrix: expected float32, got {self.matrix.dtype}")
        if self.matrix.shape[1] != len(self.names):
            raise ValueError(
                f"FeatureBlock: matrix has {self.matrix.shape[1]} columns but "
                f"{len(self.names)} names"
            )
        for g, (lo, hi) in self.groups.items():
            if not 0 <= lo <= hi <= len(self.names):
                raise ValueError(
                    f"FeatureBlock.groups[{g!r}] = ({lo}, {hi}) is outside 0..{len(self.names)}"
                )

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def select(self, group: str) -> FeatureBlock:
        """The columns of one group, as a block of its own."""
        if group not in self.groups:
            raise KeyError(f"no feature group {group!r}; groups are {sorted(self.groups)}")
        lo, hi = self.groups[group]
        return FeatureBlock(
            to_csr32(self.matrix[:, lo:hi]), self.names[lo:hi], {group: (0, hi - lo)}
        )


def to_csr32(m) -> sp.csr_matrix:
    m = sp.csr_matrix(m)
    return m if m.dtype == np.float32 else m.astype(np.float32)


# ---- the encoder ----------------------------------------------------------------------------
def _check_columns(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        cols = tuple(value)
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of column names, got {value!r}") from None
    bad = [c for c in cols if not isinstance(c, str)]
    if bad:
        raise TypeError(f"{name}: column names must be strings, got {bad[:_N_EXAMPLES]}")
    return cols


def _examples(values: pd.Series, mask: np.ndarray) -> list[tuple[int, Any]]:
    """A few (row position, value) pairs where mask is True."""
    pos = np.flatnonzero(mask)[:_N_EXAMPLES]
    out = []
    for p in pos:
        v = values.iloc[p]
        out.append((int(p), None if v is pd.NA or v is None else v))
    return out


def _arrow_text(values: pd.Series) -> pa.Array:
    """A column as an Arrow string array (null = NA).

    Categories are compared as text: strings stay as they are, pandas categoricals are
    decoded, anything else (ints, floats, bools) goes through Arrow's string cast, the same
    way at fit and at transform.
    """
    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python objects
        arr = pa.array(values.astype("string"), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())
    return arr


def _missing_text(text: pa.Array) -> np.ndarray:
    """(n,) bool: null, empty or blank."""
    blank = pc.equal(pc.utf8_trim_whitespace(text), "")
    return pc.fill_null(pc.or_(pc.is_null(text), blank), True).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class _Coded:
    """A text column as (row, token) pairs over a dictionary of distinct tokens.

    row (m,) int64 row positions; token (m,) int64 into `dictionary` (pa.Array of distinct
    strings, usually small); missing (n,) bool. Every later step (vocabulary look-up, rare /
    unseen tests) runs on the dictionary and is then gathered by `token`.
    """

    row: np.ndarray
    token: np.ndarray
    dictionary: pa.Array
    missing: np.ndarray


def _sorted_unique(key: np.ndarray) -> np.ndarray:
    """np.unique for int64 keys by sort + neighbour test (np.unique hashes first: 8x slower)."""
    key = np.sort(key)
    keep = np.ones(len(key), dtype=bool)
    keep[1:] = key[1:] != key[:-1]
    return key[keep]


def _code_categorical(values: pd.Series) -> _Coded:
    text = _arrow_text(values)
    missing = _missing_text(text)
    enc = pc.dictionary_encode(text)  # nulls stay null
    token = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    row = np.flatnonzero(~missing)
    return _Coded(row, token[row], enc.dictionary, missing)


def _code_multi_hot(values: pd.Series, separator: str) -> _Coded:
    """split + flatten (Arrow's explode); tokens stripped, empty ones and repeats dropped."""
    text = _arrow_text(values)
    missing = _missing_text(text)
    lists = pc.split_pattern(text, separator)  # null row -> null list -> no tokens
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    tokens = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    ok = pc.fill_null(pc.not_equal(tokens, ""), False)
    parent = parent[ok.to_numpy(zero_copy_only=False)]
    enc = pc.dictionary_encode(tokens.filter(ok))
    token = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    width = max(len(enc.dictionary), 1)
    key = _sorted_unique(parent * width + token)  # "Python|Python" counts once; row order
    return _Coded(key // width, key % width, enc.dictionary, missing)


class FeatureEncoder(BaseEstimator):
    """One-hot / multi-hot / standardized-numeric encoder with JSON-able state.

    categorical: columns one-hot encoded. Values are compared as text (`_arrow_text`); empty
      or blank strings count as missing.
    multi_hot: columns of `separator`-joined sets (e.g. skills "Python|SQL"); tokens are
      stripped, empty tokens and repeats in one row ignored, each present token gives a 1.
    numeric: columns standardized with the mean and (population, ddof=0) std of the fitted
      non-missing values, as sklearn's StandardScaler; a constant column gets std 1.
      Datetime columns are read as days since 1970-01-01 UTC. Missing -> 0 after
      standardizing (the mean).
    min_frequency: None, an int >= 1 (rows) or a float in (0, 1) (share of the fitted rows).
      Categories / tokens seen in fewer rows are grouped into `col=<other>`, which then also
      receives unseen values at transform time. Without it, unseen values give all zeros.
    missing_indicator: add `col=<missing>` (1 where the value is missing) for every column.
    intercept: add a first column of ones named `intercept`.

    Nothing is hidden: `fit_counts_` and `transform_counts_` (the latest transform) give per
    column the rows, missing values, rare and unseen values (with examples); an optional
    `DataReport` receives the same.

    Fitted attributes: feature_names_ (tuple), feature_groups_ ({column: (start, stop)}),
    n_features_, columns_ (per-column state), fit_counts_.
    """

    def __init__(
        self,
        categorical: Sequence[str] = (),
        multi_hot: Sequence[str] = (),
        numeric: Sequence[str] = (),
        *,
        min_frequency: int | float | None = None,
        missing_indicator: bool = False,
        intercept: bool = False,
        separator: str = "|",
    ):
        self.categorical = categorical
        self.multi_hot = multi_hot
        self.numeric = numeric
        self.min_frequency = min_frequency
        self.missing_indicator = missing_indicator
        self.intercept = intercept
        self.separator = separator

    # ---- validation -------------------------------------------------------------------------
    def _validated(self) -> dict[str, tuple[str, ...]]:
        kinds = {
            "categorical": _check_columns("categorical", self.categorical),
            "multi_hot": _check_columns("multi_hot", self.multi_hot),
            "numeric": _check_columns("numeric", self.numeric),
        }
        seen: dict[str, str] = {}
        for kind, cols in kinds.items():
            for c in cols:
                if c in seen:
                    raise ValueError(
                        f"column {c!r} is given twice (as {seen[c]} and as {kind}); "
                        "each column is encoded one way"
                    )
                seen[c] = kind
        mf = self.min_frequency
        if mf is not None:
            if isinstance(mf, bool) or not isinstance(mf, int | float | np.integer | np.floating):
                raise TypeError(f"min_frequency: expected None, int or float, got {mf!r}")
            if isinstance(mf, int | np.integer) and mf < 1:
                raise ValueError(f"min_frequency: an int must be >= 1, got {mf}")
            if isinstance(mf, float | np.floating) and not 0.0 < mf < 1.0:
                raise ValueError(f"min_frequency: a float must be in (0, 1), got {mf}")
        if not isinstance(self.separator, str) or not self.separator:
            raise ValueError(f"separator: expected a non-empty string, got {self.separator!r}")
        return kinds

    @staticmethod
    def _check_table(table: pd.DataFrame, needed: Sequence[str], what: str) -> None:
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"{what}: expected a pandas DataFrame, got {type(table).__name__}")
        absent = [c for c in needed if c not in table.columns]
        if absent:
            raise KeyError(
                f"{what}: {len(absent)} column(s) missing from the table ({table.shape[0]} rows): "
                f"{absent}; available: {list(table.columns)[:20]}"
            )

    def _threshold(self, n_rows: int) -> int:
        mf = self.min_frequency
        if mf is None:
            return 1
        if isinstance(mf, float | np.floating):
            return max(1, math.ceil(float(mf) * n_rows))
        return int(mf)

    # ---- fit --------------------------------------------------------------------------------
    def fit(self, table: pd.DataFrame, y=None, *, report: DataReport | None = None):
        kinds = self._validated()
        needed = [c for cols in kinds.values() for c in cols]
        self._check_table(table, needed, "FeatureEncoder.fit")
        if len(table) == 0:
            raise ValueError("FeatureEncoder.fit: the table has 0 rows")
        n = len(table)
        threshold = self._threshold(n)
        grouping = self.min_frequency is not None
        columns: dict[str, dict[str, Any]] = {}
        counts: dict[str, dict[str, Any]] = {}
        for kind in ("categorical", "multi_hot"):
            for col in kinds[kind]:
                coded = self._code(kind, table[col])
                # frequency = rows holding the value (multi-hot repeats in a row removed)
                freq = np.bincount(coded.token, minlength=len(coded.dictionary))
                columns[col], counts[col] = self._vocabulary(
                    kind, coded.dictionary.to_pylist(), freq, threshold, grouping
                )
                counts[col].update(rows=n, missing=int(coded.missing.sum()))
        for col in kinds["numeric"]:
            values, is_datetime = self._numeric(table[col], col, "fit")
            present = ~np.isnan(values)
            if present.any():
                mean = float(values[present].mean())
                std = float(values[present].std())
            else:
                mean, std = 0.0, 1.0
            if not np.isfinite(std) or std <= 10 * np.finfo(np.float64).eps * max(abs(mean), 1):
                std = 1.0  # constant column: centred only, as StandardScaler does
            columns[col] = {"kind": "numeric", "mean": mean, "std": std, "datetime": is_datetime}
            counts[col] = {"rows": n, "missing": int((~present).sum())}
        self.columns_ = columns
        self._layout()
        self.fit_counts_ = counts
        if report is not None:
            report.add_step(
                "feature encoder fit",
                "table",
                n,
                n,
                features=self.n_features_,
                **_flat_counts(counts, ("missing", "rare_rows")),
            )
        return self

    @staticmethod
    def _vocabulary(
        kind: str, tokens: list[str], freq: np.ndarray, threshold: int, grouping: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Kept categories (sorted), rare ones, and the counts of fit; freq (len(tokens),)."""
        keep = freq >= threshold
        rare_mask = (freq > 0) & ~keep  # blank values are in the dictionary with 0 rows
        categories = sorted(t for t, k in zip(tokens, keep, strict=True) if k)
        rare = sorted(t for t, r in zip(tokens, rare_mask, strict=True) if r)
        state = {"kind": kind, "categories": categories, "rare": rare, "other": grouping}
        return state, {
            "categories": len(categories),
            "rare_categories": len(rare),
            "rare_rows": int(freq[rare_mask].sum()),
        }

    def _code(self, kind: str, values: pd.Series) -> _Coded:
        try:
            if kind == "categorical":
                return _code_categorical(values)
            return _code_multi_hot(values, self.separator)
        except (pa.ArrowException, TypeError) as err:  # e.g. Python lists in a cell
            raise TypeError(
                f"FeatureEncoder: {kind} column {values.name!r} must hold text values "
                f"(multi-hot: {self.separator!r}-joined); got dtype {values.dtype} (e.g. "
                f"{values.head(_N_EXAMPLES).tolist()}): {err}"
            ) from err

    @staticmethod
    def _numeric(values: pd.Series, col: str, what: str) -> tuple[np.ndarray, bool]:
        """Float64 values (NaN = missing) and whether the column is a datetime."""
        if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
            values.dtype
        ):
            naive = values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz else values
            ns = naive.to_numpy(dtype="datetime64[ns]").view(np.int64)  # NaT -> int64 min
            out = ns.astype(np.float64) / _DAY_NS
            out[values.isna().to_numpy()] = np.nan
            return out, True
        if pd.api.types.is_bool_dtype(values.dtype):
            return values.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan), False
        num = pd.to_numeric(values, errors="coerce")
        out = num.to_numpy(dtype=np.float64, na_value=np.nan)
        raw_present = values.notna().to_numpy()
        bad = (np.isnan(out) & raw_present) | np.isinf(out)
        if bad.any():
            examples = _examples(values, bad)
            ex = ", ".join(f"row {r}: {v!r}" for r, v in examples)
            raise TableRowsError(
                f"FeatureEncoder.{what}: numeric column {col!r} must hold finite numbers "
                f"(missing allowed) -- {int(bad.sum()):,} of {len(values):,} rows do not, e.g. {ex}",
                rows=[r for r, _ in examples],
            )
        return out, False

    def _layout(self) -> None:
        """Feature names and groups from the per-column state (fit and from_dict share it)."""
        names: list[str] = []
        groups: dict[str, tuple[int, int]] = {}
        if self.intercept:
            names.append(INTERCEPT)
            groups[INTERCEPT] = (0, 1)
        for col, st in self.columns_.items():
            start = len(names)
            if st["kind"] == "numeric":
                names.append(col)
            else:
                names += [f"{col}={c}" for c in st["categories"]]
                if st["other"]:
                    names.append(f"{col}={OTHER}")
            if self.missing_indicator:
                names.append(f"{col}={MISSING}")
            groups[col] = (start, len(names))
        self.feature_names_ = tuple(names)
        self.feature_groups_ = groups
        self.n_features_ = len(names)

    # ---- transform --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "columns_"):
            raise RuntimeError("FeatureEncoder is not fitted: call fit(table) first")

    def transform(self, table: pd.DataFrame, *, report: DataReport | None = None) -> sp.csr_matrix:
        """CSR float32 (len(table), n_features_); row i encodes table row i (position)."""
        self._check_fitted()
        self._check_table(table, list(self.columns_), "FeatureEncoder.transform")
        n = len(table)
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        counts: dict[str, dict[str, Any]] = {}
        if self.intercept:
            rows.append(np.arange(n, dtype=np.int64))
            cols.append(np.zeros(n, dtype=np.int64))
            vals.append(np.ones(n, dtype=np.float32))
        for col, st in self.columns_.items():
            start, stop = self.feature_groups_[col]
            if st["kind"] == "numeric":
                r, c, v, missing, cnt = self._transform_numeric(table[col], col, st)
            else:
                r, c, v, missing, cnt = self._transform_categories(table[col], st)
            rows.append(r)
            cols.append(start + c)
            vals.append(v)
            if self.missing_indicator:  # the column's last feature
                m = np.flatnonzero(missing)
                rows.append(m)
                cols.append(np.full(len(m), stop - 1, dtype=np.int64))
                vals.append(np.ones(len(m), dtype=np.float32))
            counts[col] = {"rows": n, "missing": int(missing.sum()), **cnt}
        out = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n, self.n_features_),
            dtype=np.float32,
        )
        out.sum_duplicates()  # no duplicates exist; this sorts the columns of each row
        self.transform_counts_ = counts
        if report is not None:
            report.add_step(
                "feature encoder transform",
                "table",
                n,
                n,
                **_flat_counts(counts, ("missing", "rare", "unseen")),
            )
        return out

    def _transform_categories(self, values: pd.Series, st: dict[str, Any]):
        """(rows, feature offsets in the group, values, missing mask, counts).

        Rare / unseen counts are rows for a categorical column, (row, token) pairs for a
        multi-hot one.
        """
        coded = self._code(st["kind"], values)
        dictionary = coded.dictionary
        # look-ups on the distinct tokens only (shapes (n_distinct,)), then gathered per pair
        vocab = pa.array(st["categories"], type=pa.large_string())
        code_of = pc.fill_null(pc.index_in(dictionary, value_set=vocab), -1)
        code_of = code_of.to_numpy(zero_copy_only=False).astype(np.int64)
        rare_of = pc.is_in(dictionary, value_set=pa.array(st["rare"], type=pa.large_string()))
        rare_of = rare_of.to_numpy(zero_copy_only=False) & (code_of < 0)
        unseen_of = (code_of < 0) & ~rare_of
        row, code = coded.row, code_of[coded.token]
        present = np.bincount(coded.token, minlength=len(dictionary)) > 0
        unseen_tokens = dictionary.filter(pa.array(unseen_of & present)).to_pylist()
        cnt = {
            "values": len(coded.token),  # present values (multi-hot: (row, token) pairs)
            "rare": int(rare_of[coded.token].sum()),
            "unseen": int(unseen_of[coded.token].sum()),
            "distinct_unseen": len(unseen_tokens),
            "unseen_examples": sorted(unseen_tokens)[:_N_EXAMPLES],
        }
        unknown = code < 0
        if st["other"]:  # rare and unseen both go to <other>, once per row
            width = len(st["categories"]) + 1
            code[unknown] = width - 1
            if st["kind"] == "multi_hot" and unknown.sum() > 1:  # two rare tokens: still one 1
                key = _sorted_unique(row * width + code)
                row, code = key // width, key % width
        else:
            row, code = row[~unknown], code[~unknown]
        return row, code, np.ones(len(row), dtype=np.float32), coded.missing, cnt

    def _transform_numeric(self, values: pd.Series, col: str, st: dict[str, Any]):
        x, is_dt = self._numeric(values, col, "transform")
        if is_dt != st["datetime"]:
            raise TypeError(
                f"FeatureEncoder.transform: column {col!r} was "
                f"{'a datetime' if st['datetime'] else 'numeric'} at fit, got dtype {values.dtype}"
            )
        missing = np.isnan(x)
        z = ((x - st["mean"]) / st["std"]).astype(np.float32)
        keep = ~missing & (z != 0)  # missing -> 0 (the mean): not stored
        row = np.flatnonzero(keep)
        return row, np.zeros(len(row), dtype=np.int64), z[keep], missing, {}

    def fit_transform(self, table: pd.DataFrame, y=None, *, report: DataReport | None = None):
        return self.fit(table, report=report).transform(table, report=report)

    def encode(self, table: pd.DataFrame, *, report: DataReport | None = None) -> FeatureBlock:
        """transform(table) with its names and groups, ready for `design_matrices`."""
        return FeatureBlock(
            self.transform(table, report=report), self.feature_names_, dict(self.feature_groups_)
        )

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.feature_names_, dtype=object)

    # ---- plain-data state (no pickle) -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        # tuples (the defaults) as lists, so a JSON round trip gives equal parameters
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.get_params().items()}
        if isinstance(params["min_frequency"], np.integer | np.floating):
            params["min_frequency"] = params["min_frequency"].item()
        return {
            "type": "FeatureEncoder",
            "version": 1,
            "params": params,
            "columns": {c: dict(st) for c, st in self.columns_.items()},
            "feature_names": list(self.feature_names_),
            "fit_counts": self.fit_counts_,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> FeatureEncoder:
        if state.get("type") != "FeatureEncoder":
            raise ValueError(
                f"from_dict: expected type 'FeatureEncoder', got {state.get('type')!r}"
            )
        if state.get("version") != 1:
            raise ValueError(f"from_dict: unsupported version {state.get('version')!r}")
        self = cls(**state["params"])
        kinds = self._validated()
        order = [c for cols in kinds.values() for c in cols]
        if list(state["columns"]) != order:
            raise ValueError(
                f"from_dict: columns {list(state['columns'])} do not match the parameters {order}"
            )
        self.columns_ = {c: dict(st) for c, st in state["columns"].items()}
        self._layout()
        if list(self.feature_names_) != list(state["feature_names"]):
            raise ValueError("from_dict: stored feature names differ from the rebuilt ones")
        self.fit_counts_ = state.get("fit_counts", {})
        return self


def _flat_counts(counts: dict[str, dict[str, Any]], keys: Sequence[str]) -> dict[str, int]:
    """{'col.key': n} for the nonzero counts, for a DataReport line."""
    return {f"{c}.{k}": d[k] for c, d in counts.items() for k in keys if d.get(k)}
