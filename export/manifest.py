"""What every published version carries: provenance (config, data fingerprint and code version,
given by the caller), gate results, counts, the rows' checksum, the sink; and the helpers that
name versions and keep passwords out of it."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pyarrow as pa

from export.checksum import CANONICAL, ORDER_PUBLISH
from export.gates import GateConfig, GateResult
from export.view import ChunkView, Vocabulary

__all__ = [
    "FORMAT",
    "PROVENANCE",
    "new_version",
    "redact_url",
    "redact_urls",
    "Counts",
    "check_provenance",
    "build_manifest",
    "to_jsonable",
    "to_json",
]

FORMAT = "ncf-glmix export manifest v1"
PROVENANCE = ("config", "data_fingerprint", "code_version")
_SECRET_KEYS = ("pass", "secret", "token", "key")


def to_jsonable(obj: Any) -> Any:
    """Numpy / pandas scalars and containers to plain JSON types; the rules of
    watchlog.io.to_jsonable, without importing watchlog (see export.rows), except that every
    non-finite float (NaN, +-inf) becomes None: JSON has no such numbers, and Python's
    `Infinity` is rejected by strict parsers and by PostgreSQL's jsonb. Timestamps (datetime,
    pd.Timestamp, np.datetime64 of any unit) become ISO 8601 strings in UTC with the offset
    written (+00:00; naive values are UTC), NaT becomes None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "M":  # tolist(): ints for ns
        return [_timestamp(v) for v in obj.ravel()]
    if isinstance(obj, list | tuple | set | np.ndarray):
        return [to_jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.datetime64 | dt.datetime):  # pd.Timestamp and pd.NaT included
        return _timestamp(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dt.date):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _timestamp(value: np.datetime64 | dt.datetime) -> str | None:
    """An instant as ISO 8601 in UTC with its offset (+00:00), None for NaT. A naive value is
    UTC (the project's rule), so it gets the offset that says so; an aware one is converted.
    Through pandas: `np.datetime64[ns].item()` is a bare int and a datetime keeps no
    nanoseconds, so neither would write every such value as a time."""
    import pandas as pd  # loaded by export.rows already

    stamp = pd.Timestamp(value)
    if stamp is pd.NaT:
        return None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


def to_json(obj: Any, **kwargs: Any) -> str:
    """`obj` as strict JSON text (`to_jsonable`, then no NaN / Infinity allowed)."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)


def new_version(now: dt.datetime | None = None) -> str:
    """A version name that sorts by time: UTC to the microsecond, e.g. 20261201T204300123456Z."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def redact_url(url: str) -> str:
    """`url` with its password (and any password-like query value) replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(_mask_password(url))
    except ArgumentError:
        return "<unparseable URL>"
    query = {
        k: ("***" if any(s in k.lower() for s in _SECRET_KEYS) else v)
        for k, v in parsed.query.items()
    }
    text = parsed.set(query={}).render_as_string(hide_password=True)
    if query:
        pairs = [(k, x) for k, v in query.items() for x in (v if isinstance(v, tuple) else [v])]
        text += "?" + urlencode(pairs, safe="*/")
    return text


def redact_urls(obj: Any) -> Any:
    """`obj` (plain dicts, lists, scalars) with every URL's password, and any password-like
    query value, replaced by ***: `build_manifest` applies it to the caller's provenance, whose
    config may hold a database URL resolved from the environment (NCF_GLMIX_EXPORT_URL)."""
    if isinstance(obj, dict):
        return {k: redact_urls(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_urls(v) for v in obj]
    if isinstance(obj, str) and "://" in obj:
        redacted = redact_url(obj)
        # not a URL after all: kept unless it may hold credentials (user:password@host)
        if redacted == "<unparseable URL>" and "@" not in obj:
            return obj
        return redacted
    return obj


def _mask_password(url: str) -> str:
    """The password of `url`'s user info as ***, found before parsing: everything between the
    user name's ':' and the last '@' before the query, so that an unencoded '@' in the password
    (u:p@ss@host) cannot leave part of it in the text a parser reads as the host."""
    start = url.find("//")
    if start < 0:
        return url
    start += 2
    ends = [i for i in (url.find("?", start), url.find("#", start)) if i >= 0]
    at = url.rfind("@", start, min(ends, default=len(url)))
    colon = url.find(":", start, at) if at >= 0 else -1
    return url if colon < 0 else f"{url[: colon + 1]}***{url[at:]}"


def _plain(value: Any) -> Any:
    """OmegaConf containers (a Hydra config) as plain dicts / lists, resolved."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return value
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


class Counts:
    """Rows, learners and per-source / per-model-version counts, accumulated per chunk."""

    def __init__(self, sources: Vocabulary, versions: Vocabulary):
        self.sources, self.versions = sources, versions
        self.rows = 0
        self.learners = 0
        self.chunks = 0
        self._rows_per_source = np.zeros(0, dtype=np.int64)
        self._learners_per_source = np.zeros(0, dtype=np.int64)
        self._rows_per_version = np.zeros(0, dtype=np.int64)

    @staticmethod
    def _add(total: np.ndarray, part: np.ndarray) -> np.ndarray:
        if len(part) > len(total):
            total = np.r_[total, np.zeros(len(part) - len(total), dtype=np.int64)]
        total[: len(part)] += part
        return total

    def update(self, view: ChunkView) -> None:
        self.rows += view.n_rows
        self.learners += view.n_runs
        self.chunks += 1
        n_src = len(self.sources.codes)
        rows = view.source.rows_per_code(n_src)
        self._rows_per_source = self._add(self._rows_per_source, rows)
        # a learner counts once for every source among its rows
        per_learner = np.zeros(n_src, dtype=np.int64)
        for code in np.flatnonzero(rows):
            wanted = np.arange(n_src) == code
            per_learner[code] = int(view.source.learners_with(wanted, view.starts).sum())
        self._learners_per_source = self._add(self._learners_per_source, per_learner)
        self._rows_per_version = self._add(
            self._rows_per_version, view.model_version.rows_per_code(len(self.versions.codes))
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "learners": self.learners,
            "chunks": self.chunks,
            "rows_per_source": dict(
                zip(self.sources.labels, self._rows_per_source.tolist(), strict=False)
            ),
            "learners_per_source": dict(
                zip(self.sources.labels, self._learners_per_source.tolist(), strict=False)
            ),
            "rows_per_model_version": dict(
                zip(self.versions.labels, self._rows_per_version.tolist(), strict=False)
            ),
        }


# Keys the export writes itself: `files` (file sinks' part list) and `table` (SQL sinks' live
# and archived table names) are added by the sink at commit, after `build_manifest`, so a
# caller's value would be overwritten without a word.
_RESERVED = (
    "format",
    "version",
    "created_at",
    "sink",
    "gates",
    "counts",
    "checksum",
    "schema",
    "files",
    "table",
)


def check_provenance(provenance: Mapping[str, Any]) -> None:
    """The caller's provenance must name config, data fingerprint and code version, must not
    use a key the export writes itself, and must be writable as JSON."""
    if not isinstance(provenance, Mapping):
        raise ValueError(f"manifest: expected a mapping, got {type(provenance).__name__}")
    missing = [k for k in PROVENANCE if k not in provenance]
    if missing:
        raise ValueError(
            f"manifest: provenance keys {missing} are missing; pass config, data_fingerprint "
            "and code_version (e.g. experiments.provenance.code_version())"
        )
    clash = sorted(set(_RESERVED) & set(provenance))
    if clash:
        raise ValueError(f"manifest: keys {clash} are written by the export; rename them")
    # The manifest is stored only after the whole load: a value that cannot be written as JSON
    # must fail here, before the sink is opened, not after every row was loaded.
    for key, value in provenance.items():
        try:
            to_json(_plain(value))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"manifest: {key!r} cannot be stored as JSON ({err}); give dicts, lists, "
                "strings, numbers, booleans or None"
            ) from err


def build_manifest(
    *,
    version: str,
    provenance: Mapping[str, Any],
    sink: Mapping[str, Any],
    gate_config: GateConfig,
    gate_results: list[GateResult],
    counts: Counts,
    checksum: str,
    schema: pa.Schema,
    checksum_order: str = ORDER_PUBLISH,
    created_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The manifest of one version, plain JSON types only."""
    check_provenance(provenance)
    created = (created_at or dt.datetime.now(dt.UTC)).isoformat(timespec="microseconds")
    provenance = {k: redact_urls(_plain(v)) for k, v in provenance.items()}
    return to_jsonable(
        {
            "format": FORMAT,
            "version": version,
            "created_at": created,
            **{k: provenance[k] for k in PROVENANCE},
            "sink": dict(sink),
            "gates": {
                "passed": all(r.passed is not False for r in gate_results),
                "config": gate_config.to_dict(),
                "results": [r.to_dict() for r in gate_results],
            },
            "counts": counts.to_dict(),
            "checksum": {
                "algorithm": "sha256",
                "canonical": CANONICAL,
                "order": checksum_order,
                "hex": checksum,
            },
            "schema": {f.name: str(f.type) for f in schema},
            **{k: v for k, v in provenance.items() if k not in PROVENANCE},
        }
    )
