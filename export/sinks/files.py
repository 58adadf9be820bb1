"""File sinks: Parquet (default), CSV and JSONL, published as versions behind a `current` link.

    <root>/
      current -> versions/<version>          a relative symlink, swapped atomically
      versions/<version>/part-00000.parquet  data part files (one per `max_rows_per_file` rows)
      versions/<version>/manifest.json
      .lock                                  the publisher lock (flock)

A publish writes `versions/.staging-<version>/`, fsyncs every file and the folder, renames it
to `versions/<version>`, then creates a new symlink beside `current` and `os.replace`s it over
`current` (one atomic rename) and fsyncs the root. A reader that resolves `current` once
(`export.readers.current_version`) reads one version from start to end; opening
`current/part-*` one by one across a swap could mix two versions, so resolve it first.
The `keep_versions` newest versions are kept (the current one always); older ones are renamed
to a hidden name and then deleted, so a version folder is either whole or gone.

Leftovers of a killed export (`versions/.staging-*`, `versions/.trash-*`, `.current-*`
links) are hidden from readers and removed by the next publish to the same root, under the
lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from export.manifest import to_jsonable
from export.sinks.base import FileLock, SinkError, check_keep_versions, fsync_dir, fsync_file

__all__ = ["ParquetSink", "CsvSink", "JsonlSink", "VERSION_PATTERN"]

VERSION_PATTERN = re.compile(r"^\d{8}T\d{12}Z$")
_HIDDEN = (".staging-", ".trash-")


class _Part:
    """One open data part file."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema, self.rows = path, schema, 0

    def write(self, table: pa.Table) -> None:
        self.rows += table.num_rows

    def close(self) -> None:
        pass


class _ParquetPart(_Part):
    def __init__(self, path: Path, schema: pa.Schema, compression: str):
        super().__init__(path, schema)
        self._writer = pq.ParquetWriter(path, schema, compression=compression)

    def write(self, table: pa.Table) -> None:
        super().write(table)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def close(self) -> None:
        self._writer.close()


class _CsvPart(_Part):
    def __init__(self, path: Path, schema: pa.Schema):
        super().__init__(path, schema)
        self._writer = pcsv.CSVWriter(path, schema)

    def write(self, table: pa.Table) -> None:
        super().write(table)
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


def _json_strings(arr: pa.Array) -> pa.Array:
    """Each string as a JSON string literal (escaped once per distinct value)."""
    encoded = pc.dictionary_encode(arr)
    literals = [json.dumps(s, ensure_ascii=False) for s in encoded.dictionary.to_pylist()]
    return pa.array(literals, pa.string()).take(encoded.indices)


class _JsonlPart(_Part):
    """One JSON object per line; floats in their shortest round-trip form (Arrow's cast)."""

    def __init__(self, path: Path, schema: pa.Schema):
        super().__init__(path, schema)
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, table: pa.Table) -> None:
        super().write(table)
        parts: list[Any] = []
        for i, f in enumerate(self.schema):
            arr = table.column(f.name).combine_chunks()
            text = _json_strings(arr) if pa.types.is_string(f.type) else arr.cast(pa.string())
            parts += [("{" if i == 0 else ",") + json.dumps(f.name) + ":", text]
        lines = pc.binary_join_element_wise(*parts, "}\n", "")
        offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, 4 * lines.offset)
        self._file.write(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]])

    def close(self) -> None:
        self._file.close()


class _FileSink:
    kind = "files"
    suffix = ""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        keep_versions: int = 3,
        max_rows_per_file: int | None = None,
        lock_timeout: float = 60.0,
    ):
        self.root = Path(root)
        self.keep_versions = check_keep_versions(keep_versions)
        if max_rows_per_file is not None and max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file: must be >= 1 or None, got {max_rows_per_file}")
        self.max_rows_per_file = max_rows_per_file
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, keep_versions={self.keep_versions})"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "root": str(self.root.resolve()),
            "current": str(self.root.resolve() / "current"),
            "keep_versions": self.keep_versions,
            "max_rows_per_file": self.max_rows_per_file,
        }

    def _part(self, path: Path, schema: pa.Schema) -> _Part:  # pragma: no cover - interface
        raise NotImplementedError

    def open(self, version: str, schema: pa.Schema) -> _FileStaging:
        return _FileStaging(self, version, schema)


class ParquetSink(_FileSink):
    """Parquet part files, one row group per chunk (`ParquetWriter`, streamed)."""

    kind, suffix = "parquet", ".parquet"

    def __init__(self, root, *, compression: str = "snappy", **kwargs):
        super().__init__(root, **kwargs)
        self.compression = compression

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "compression": self.compression}

    def _part(self, path: Path, schema: pa.Schema) -> _Part:
        return _ParquetPart(path, schema, self.compression)


class CsvSink(_FileSink):
    """CSV part files with a header line (Arrow's writer: strings quoted, floats round-trip)."""

    kind, suffix = "csv", ".csv"

    def _part(self, path: Path, schema: pa.Schema) -> _Part:
        return _CsvPart(path, schema)


class JsonlSink(_FileSink):
    """JSON Lines part files, one object per row."""

    kind, suffix = "jsonl", ".jsonl"

    def _part(self, path: Path, schema: pa.Schema) -> _Part:
        return _JsonlPart(path, schema)


class _FileStaging:
    def __init__(self, sink: _FileSink, version: str, schema: pa.Schema):
        self.sink, self.version, self.schema = sink, version, schema
        root = sink.root
        try:
            (root / "versions").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SinkError(f"{sink.kind} sink {root}: cannot create the folder: {err}") from err
        self._lock = FileLock(root / ".lock", sink.lock_timeout, f"{sink.kind} sink {root}")
        self._lock.acquire()
        try:
            self._clean_leftovers()
            final = root / "versions" / version
            if final.exists():
                raise SinkError(f"{sink.kind} sink {root}: version {version} exists already")
            self.dir = root / "versions" / f".staging-{version}"
            self.dir.mkdir()
        except BaseException:
            self._lock.release()
            raise
        self._parts: list[_Part] = []
        self._open: _Part | None = None

    def _clean_leftovers(self) -> None:
        """What a killed export left: hidden from readers, removed under the lock."""
        versions = self.sink.root / "versions"
        for entry in versions.iterdir():
            if entry.name.startswith(_HIDDEN):
                shutil.rmtree(entry, ignore_errors=True)
        for entry in self.sink.root.glob(".current-*"):
            entry.unlink(missing_ok=True)

    def write(self, table: pa.Table) -> None:
        if self._open is None:
            name = f"part-{len(self._parts):05d}{self.sink.suffix}"
            self._open = self.sink._part(self.dir / name, self.schema)
            self._parts.append(self._open)
        self._open.write(table)
        limit = self.sink.max_rows_per_file
        if limit is not None and self._open.rows >= limit:
            self._open.close()
            self._open = None

    def commit(self, manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        # On an error publish() calls abort(): staging removed, lock released.
        root = self.sink.root
        if self._open is not None:
            self._open.close()
            self._open = None
        files = []
        for part in self._parts:
            fsync_file(part.path)
            files.append(
                {"name": part.path.name, "rows": part.rows, "bytes": part.path.stat().st_size}
            )
        manifest = {**manifest, "files": files}
        path = self.dir / "manifest.json"
        path.write_text(json.dumps(to_jsonable(manifest), indent=2) + "\n", encoding="utf-8")
        fsync_file(path)
        fsync_dir(self.dir)
        final = root / "versions" / self.version
        os.replace(self.dir, final)
        fsync_dir(root / "versions")
        self._swap_current(final)
        self._prune()
        self._lock.release()
        return str(final), manifest

    def _swap_current(self, final: Path) -> None:
        root = self.sink.root
        current = root / "current"
        if current.exists() and not current.is_symlink():
            raise SinkError(f"{root}: 'current' exists and is not a symlink; move it away")
        link = root / f".current-{self.version}"
        link.unlink(missing_ok=True)
        os.symlink(Path("versions") / final.name, link)
        os.replace(link, current)  # the one atomic step readers can observe
        fsync_dir(root)

    def _prune(self) -> None:
        versions = self.sink.root / "versions"
        current = os.path.basename(os.readlink(self.sink.root / "current"))
        names = sorted(p.name for p in versions.iterdir() if VERSION_PATTERN.match(p.name))
        for name in names[: max(len(names) - self.sink.keep_versions, 0)]:
            if name == current:
                continue
            trash = versions / f".trash-{name}"
            with contextlib.suppress(OSError):
                os.replace(versions / name, trash)  # whole or gone, never half-deleted
                shutil.rmtree(trash, ignore_errors=True)

    def abort(self) -> None:
        try:
            for part in self._parts:
                with contextlib.suppress(Exception):
                    part.close()
            shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            self._lock.release()
