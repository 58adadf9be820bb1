"""Caller ids of any hashable type <-> dense int32 indices, mapped once."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd

from watchlog.io import write_parquet

__all__ = ["IdMap", "UnknownIdError", "id_kind", "positions_in"]


def id_kind(dtype, values=None) -> str | None:
    """ "int" | "str" for an id dtype (a categorical's categories decide; an object column's
    values, when given), else None."""
    if isinstance(dtype, pd.CategoricalDtype):
        return id_kind(dtype.categories.dtype, dtype.categories)
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_object_dtype(dtype):
        inferred = None if values is None else pd.api.types.infer_dtype(values, skipna=True)
        return {"string": "str", "integer": "int"}.get(inferred)
    if pd.api.types.is_string_dtype(dtype):
        return "str"
    return None


class UnknownIdError(KeyError):
    """Ids not present in the map; carries the count and a few examples."""

    def __init__(self, what: str, unknown: np.ndarray, total: int, hint: str = ""):
        self.what, self.unknown, self.total = what, unknown, total
        examples = ", ".join(repr(x) for x in unknown[:5])
        super().__init__(
            f"{what}: {len(unknown):,} of {total:,} ids are unknown (not in the id map), e.g. "
            f"{examples}" + (f". {hint}" if hint else "")
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class IdMap:
    """A frozen bijection between caller ids and 0..n-1.

    Ids are sorted (categorical ids by value, not category order) when they are mutually
    comparable, so the same set of ids gives the same indices whatever the row order or
    encoding of the input (`IdMap.ordered` keeps a given order instead).
    """

    def __init__(self, ids, name: str = "id"):
        unique = pd.unique(pd.Series(ids))
        if isinstance(unique, pd.Categorical):
            # Categorical ids (dictionary-encoded Parquet from Spark, Polars, pyarrow) as their
            # plain values: a CategoricalIndex sorts by category order, which is the writer's
            # first-seen order, so the same ids would get other indices (and fingerprint) than
            # from a plain column. take() by code: no Python object per row.
            unique = unique.categories.take(unique.codes, allow_fill=True)
        index = pd.Index(unique)
        if index.hasnans:
            raise ValueError(f"{name}: ids must not be missing")
        with contextlib.suppress(TypeError):  # mixed id types: keep first-seen order
            index = index.sort_values()
        self.index = index
        self.name = name

    @classmethod
    def ordered(cls, ids, name: str = "id") -> IdMap:
        """A map that keeps the order of `ids` (index i is the i-th id) instead of sorting,
        e.g. one that extends another map: its ids first, at the indices they had, then new
        ones. The ids must be distinct and not missing. `save` / `load` keep the order."""
        index = ids if isinstance(ids, pd.Index) else pd.Index(pd.Series(ids))
        if index.hasnans:
            raise ValueError(f"{name}: ids must not be missing")
        if not index.is_unique:
            repeated = index[index.duplicated()].unique()[:5].tolist()
            raise ValueError(f"{name}: ids must be distinct; repeated: {repeated}")
        out = cls.__new__(cls)
        out.index, out.name = index, name
        return out

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"IdMap({self.name}, n={len(self):,})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self.index.equals(other.index)

    def check_kind(self, ids, what: str) -> None:
        """Refuse `ids` of another kind than the map's (text against integers: "3" never
        matches 3, so a lenient lookup would call every id unknown, silently): a TypeError
        naming `what`, both kinds and a few examples. O(1) for typed ids; an object column's
        values are inspected once."""
        if not len(ids):
            return
        arr = ids if hasattr(ids, "dtype") else pd.Index(ids)
        mine = self._kind
        given = id_kind(arr.dtype, arr)
        if mine is not None and given is not None and mine != given:
            head = np.asarray(arr[:3]).tolist()
            raise TypeError(
                f"{what}: {len(arr):,} {given} ids (dtype {arr.dtype}, e.g. {head}), but the "
                f"{self.name} map holds {mine} ids (dtype {self.index.dtype}, e.g. "
                f"{self.index[:3].tolist()}): no id would match; convert one side "
                "(.astype(str) or .astype(int))"
            )

    @functools.cached_property
    def _kind(self) -> str | None:
        """The map's own id kind, inspected once (an object index's values are O(n) to
        infer, and `check_kind` runs on every serving call)."""
        return id_kind(self.index.dtype, self.index)

    def to_index(self, ids, *, strict: bool = True) -> np.ndarray:
        """Dense int32 indices of `ids`; unknown ids raise (strict) or map to -1."""
        idx = positions_in(self.index, ids)
        if strict and (idx < 0).any():
            bad = np.asarray(ids, dtype=object)[idx < 0]
            raise UnknownIdError(self.name, pd.unique(bad), len(idx))
        return idx.astype(np.int32)

    def to_ids(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(
                f"{self.name}: indices must be in [0, {len(self)}), got [{idx.min()}, {idx.max()}]"
            )
        return self.index.to_numpy()[idx]

    def save(self, path: str | os.PathLike) -> Path:
        return write_parquet(path, pd.DataFrame({self.name: self.index}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> IdMap:
        """A map written by `save`: its saved order is the mapping (not re-sorted). The file
        must hold one column of distinct, non-missing ids (else a ValueError naming it)."""
        frame = pd.read_parquet(path)
        if frame.shape[1] != 1:
            raise ValueError(
                f"{path}: an id map file holds one column (the ids); got {list(frame.columns)}"
            )
        try:
            return cls.ordered(pd.Index(frame.iloc[:, 0]), name=frame.columns[0])
        except ValueError as err:  # repeated or missing ids: indices would be ambiguous
            raise ValueError(f"{path}: {err}") from None


def positions_in(index: pd.Index, ids) -> np.ndarray:
    """(n,) int64 positions of `ids` in `index` (-1: absent), as `index.get_indexer` gives them.
    Categorical ids (an event log's id columns) are looked up once per category and gathered
    by code: O(n_categories) hashing and no Python object per row."""
    if isinstance(getattr(ids, "dtype", None), pd.CategoricalDtype):
        cat = ids.array if isinstance(ids, pd.Series | pd.Index) else pd.Categorical(ids)  # no copy
        lookup = np.append(index.get_indexer(cat.categories), -1)
        return lookup[cat.codes]  # code -1 (missing) hits the appended -1
    return index.get_indexer(ids if isinstance(ids, pd.Index) else pd.Index(ids))
