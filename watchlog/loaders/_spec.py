"""Table specs of `load_tables`: where a table is and how its columns map onto the contract
(the keys and their rules: watchlog/loaders/tabular.py and docs/data_contract.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "TableSpec"]

FORMATS = ("parquet", "csv", "tsv")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}
_COMPRESSION = (".gz", ".bz2", ".zst", ".lz4")  # pyarrow decompresses these by suffix

# Names a config can give for a tab (Hydra's override grammar keeps "\t" as two characters).
_TAB_NAMES = {"tab": "\t", "\\t": "\t"}


@dataclass(frozen=True)
class TableSpec:
    """Where one table is and how its columns map onto the contract."""

    path: Path
    format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    fill: dict[str, Any] = field(default_factory=dict)
    extra: tuple[str, ...] | None = None
    delimiter: str | None = None
    encoding: str = "utf8"
    quoting: bool = True
    multiline: bool = False

    @classmethod
    def parse(
        cls, table: str, spec: TableSpec | Mapping[str, Any] | str | os.PathLike
    ) -> TableSpec | None:
        """A spec from a TableSpec, a mapping (dict / DictConfig) or a bare path; None for
        a mapping whose path is null (no such table)."""
        if isinstance(spec, TableSpec):
            return spec
        if isinstance(spec, str | os.PathLike):
            return cls(Path(spec))
        if not isinstance(spec, Mapping):
            raise TypeError(f"{table}: expected a path or a mapping, got {type(spec).__name__}")
        allowed = {"path", "format", "columns", "fill", "extra", "delimiter", "encoding"}
        allowed |= {"quoting", "multiline"}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ValueError(f"{table}: unknown spec key(s) {unknown}; allowed: {sorted(allowed)}")
        if "path" not in spec:
            raise ValueError(f"{table}: the spec needs a 'path'")
        if spec["path"] is None:
            return None
        extra = spec.get("extra")
        delimiter = spec.get("delimiter")
        return cls(
            path=Path(spec["path"]),
            format=spec.get("format"),
            columns={
                str(k): str(v) for k, v in (spec.get("columns") or {}).items() if v is not None
            },
            fill={str(k): v for k, v in (spec.get("fill") or {}).items() if v is not None},
            extra=None if extra is None else tuple(str(c) for c in extra),
            delimiter=_TAB_NAMES.get(delimiter, delimiter),
            encoding=spec.get("encoding") or "utf8",
            quoting=_flag(table, "quoting", spec.get("quoting"), True),
            multiline=_flag(table, "multiline", spec.get("multiline"), False),
        )

    def resolved_format(self) -> str:
        """The explicit format, else the one named by the suffix (before any .gz etc.)."""
        if self.format is not None:
            if self.format not in FORMATS:
                raise ValueError(
                    f"{self.path}: format must be one of {FORMATS}, got {self.format!r}"
                )
            return self.format
        suffixes = [s.lower() for s in self.path.suffixes]
        if suffixes and suffixes[-1] in _COMPRESSION:
            suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] in _SUFFIXES:
            return _SUFFIXES[suffixes[-1]]
        raise ValueError(
            f"{self.path}: cannot tell the format from the suffix; give format: one of {FORMATS}"
        )


def _flag(table: str, key: str, value: Any, default: bool) -> bool:
    """A boolean spec key (null: the default); a string like "false" would read as true."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{table}: {key} must be true or false, got {value!r}")
    return value
