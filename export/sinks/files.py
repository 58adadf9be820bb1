"""File sinks: Parquet (default), CSV and JSONL, published as versions behind a `current` link.

    <root>/
      current -> versions/<version>          a relative symlink, swapped atomically
      versions/<version>/part-00000.parquet  data part files (at most `max_rows_per_file` rows each)
      versions/<version>/_manifest.json      the manifest (named so that Parquet readers skip it)
      .lock                                  the publisher lock (flock)
      .history                               the versions made current, oldest first

A publish first checks that `current`, if present, is a symlink (before writing anything),
writes `versions/.staging-<version>/`, fsyncs every file and the folder, renames it to
`versions/<version>`, then creates a new symlink beside `current` and `os.replace`s it over
`current` (one atomic rename) and fsyncs the root; if that swap fails, the folder goes back to
its staging name and is removed. A reader that resolves `current` once
(`export.readers.current_version`, or `read_version`) reads one version from start to end,
provided at most `keep_versions - 1` publishes complete during its read (with keep_versions=1,
none): the next one prunes the version it resolved, and `read_version` then says so. Opening
`current/part-*` one by one across a swap could mix two versions, so resolve it first.
The `keep_versions` versions most recently made current are kept (as recorded in `.history`,
the one `current` names last); every other version folder, one that never became current
included (a publish killed between its rename and the swap), is renamed to a hidden name and
then deleted, so a version folder is either whole or gone. A folder that cannot be removed is
reported in `PublishResult.prune_errors` and retried by the next publish. A root written
before `.history` existed counts its version folders in name (= time) order.

A version folder is a plain Parquet (CSV, JSON) dataset: `pd.read_parquet(<root>/current)`,
`pyarrow.dataset` and Spark read its part files (resolve `current` once, as above).

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

from export.manifest import to_json
from export.sinks.base import FileLock, SinkError, check_keep_versions, fsync_dir, fsync_file

__all__ = ["ParquetSink", "CsvSink", "JsonlSink", "VERSION_PATTERN", "MANIFEST", "OLD_MANIFEST"]

# Arrow, pandas and Spark skip files whose names start with "_" or "." when they read a folder
# as a dataset, so `pd.read_parquet(<root>/current)` reads the part files only; versions written
# before this name read back through `export.readers.read_manifest` (OLD_MANIFEST).
MANIFEST, OLD_MANIFEST = "_manifest.json", "manifest.json"
VERSION_PATTERN = re.compile(r"^\d{8}T\d{12}Z$")
_HIDDEN = (".staging-", ".trash-")
_HISTORY = ".history"


def _check_current(root: Path, kind: str) -> None:
    """`current` must be absent or the symlink this sink swaps: checked before anything is
    written, so a root where the swap would be refused gets no version at all."""
    current = root / "current"
    if os.path.lexists(current) and not current.is_symlink():
        raise SinkError(
            f"{kind} sink {root}: 'current' exists and is not a symlink (the sink swaps a link "
            "there); move it away; nothing published"
        )


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
        self.prune_errors: list[str] = []
        root = sink.root
        _check_current(root, sink.kind)
        try:
            (root / "versions").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SinkError(f"{sink.kind} sink {root}: cannot create the folder: {err}") from err
        self._lock = FileLock(root / ".lock", sink.lock_timeout, f"{sink.kind} sink {root}")
        self._lock.acquire()
        try:
            self._clean_leftovers()
            self._history = self._read_history()
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
        (self.sink.root / f"{_HISTORY}.tmp").unlink(missing_ok=True)

    def _current_name(self) -> str | None:
        """The version folder `current` points to (None: no link)."""
        try:
            return os.path.basename(os.readlink(self.sink.root / "current"))
        except OSError:
            return None

    def _read_history(self) -> list[str]:
        """Versions on disk in the order they became current, oldest first: `.history` (or,
        on a root written before it existed, the version folders by name), then the one
        `current` names moved last, as it was current most recently (also after a publish
        killed between its swap and writing `.history`, or after `current` was reset by
        hand)."""
        root = self.sink.root
        on_disk = {p.name for p in (root / "versions").iterdir() if VERSION_PATTERN.match(p.name)}
        try:
            recorded = (root / _HISTORY).read_text(encoding="utf-8").split()
        except FileNotFoundError:
            recorded = sorted(on_disk)
        except (OSError, UnicodeDecodeError) as err:
            raise SinkError(f"{self.sink.kind} sink {root}: cannot read {_HISTORY}: {err}") from err
        current = self._current_name()
        history = [v for v in dict.fromkeys(recorded) if v in on_disk and v != current]
        return [*history, current] if current in on_disk else history

    def write(self, table: pa.Table) -> None:
        """Append a chunk, cut where a part reaches `max_rows_per_file` (a chunk larger than
        the limit spreads over several parts; slices are zero-copy views)."""
        limit = self.sink.max_rows_per_file
        start = 0
        while start < table.num_rows:
            if self._open is None:
                name = f"part-{len(self._parts):05d}{self.sink.suffix}"
                self._open = self.sink._part(self.dir / name, self.schema)
                self._parts.append(self._open)
            room = table.num_rows - start if limit is None else limit - self._open.rows
            self._open.write(table.slice(start, room))
            start += room
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
        path = self.dir / MANIFEST
        path.write_text(to_json(manifest, indent=2) + "\n", encoding="utf-8")
        fsync_file(path)
        fsync_dir(self.dir)
        final = root / "versions" / self.version
        os.replace(self.dir, final)
        fsync_dir(root / "versions")
        try:
            self._swap_current(final)
        except BaseException:
            # Never served: back to the staging name, which abort() removes. Should even this
            # fail, the folder is in no history and the next publish deletes it.
            if self._current_name() != self.version:
                with contextlib.suppress(OSError):
                    os.replace(final, self.dir)
            raise
        self.prune_errors = self._prune()
        self._lock.release()
        # absolute: a record of it (export.json) is read later from another working directory
        return str(final.resolve()), manifest

    def _swap_current(self, final: Path) -> None:
        root = self.sink.root
        _check_current(root, self.sink.kind)  # again: it could have appeared since open()
        link = root / f".current-{self.version}"
        link.unlink(missing_ok=True)
        os.symlink(Path("versions") / final.name, link)
        os.replace(link, root / "current")  # the one atomic step readers can observe
        fsync_dir(root)

    def _prune(self) -> list[str]:
        """Keep the `keep_versions` versions most recently made current, the new one last;
        delete every other version folder. `.history` is written first: a kill before the
        deletions leaves folders it does not name, which the next publish deletes. The new
        version is live already: a failure is returned ("<folder>: <reason>"), not raised."""
        root, versions = self.sink.root, self.sink.root / "versions"
        kept = [*self._history, self.version][-self.sink.keep_versions :]
        try:
            tmp = root / f"{_HISTORY}.tmp"
            tmp.write_text("".join(f"{v}\n" for v in kept), encoding="utf-8")
            fsync_file(tmp)
            os.replace(tmp, root / _HISTORY)
            fsync_dir(root)
            names = sorted(p.name for p in versions.iterdir() if VERSION_PATTERN.match(p.name))
        except OSError as err:
            return [f"recording {_HISTORY} or listing the versions: {err}; none removed"]
        errors = []
        for name in names:
            if name in kept:
                continue
            trash = versions / f".trash-{name}"
            try:
                os.replace(versions / name, trash)  # whole or gone, never half-deleted
            except OSError as err:
                errors.append(f"{versions / name}: {err}")
                continue
            shutil.rmtree(trash, ignore_errors=True)  # what is left: removed as a leftover
        return errors

    def abort(self) -> None:
        try:
            for part in self._parts:
                with contextlib.suppress(Exception):
                    part.close()
            shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            self._lock.release()
