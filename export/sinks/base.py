"""What every sink offers `publish`, its errors, and the file-system helpers two of them share.

A sink is opened once per publish: `open(version, schema)` connects, takes the sink's
publisher lock, removes what a killed earlier export left behind, and returns a `Staging`
that receives the chunks (`write`), then either `commit(manifest)` (atomic swap, old versions
pruned) or `abort()` (staging removed, the live version untouched).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

__all__ = [
    "SinkError",
    "SchemaMismatchError",
    "Staging",
    "Sink",
    "FileLock",
    "fsync_file",
    "fsync_dir",
    "check_keep_versions",
]


class SinkError(RuntimeError):
    """The sink cannot take this publish (connection, permissions, lock): nothing published."""


class SchemaMismatchError(SinkError):
    """A table of the export's name exists with other columns; it was left untouched."""


class Staging(Protocol):
    def write(self, table: pa.Table) -> None: ...

    def commit(self, manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Make the staged version current; returns (location, manifest as stored)."""
        ...

    def abort(self) -> None:
        """Remove what was staged; never raises."""
        ...


class Sink(Protocol):
    kind: str

    def describe(self) -> dict[str, Any]:
        """Where the sink writes, for the manifest and messages (never a password)."""
        ...

    def open(self, version: str, schema: pa.Schema) -> Staging: ...


def check_keep_versions(keep_versions: int) -> int:
    if int(keep_versions) < 1:
        raise ValueError(
            f"keep_versions: versions kept, the current one included; must be >= 1, got "
            f"{keep_versions}"
        )
    return int(keep_versions)


class FileLock:
    """An exclusive `flock` on `path`: one publisher per sink at a time. The kernel releases it
    when the holder dies, so a killed export never leaves a stale lock behind."""

    def __init__(self, path: str | os.PathLike, timeout: float, what: str):
        self.path, self.timeout, self.what = Path(path), timeout, what
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return self
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise SinkError(
                        f"{self.what}: another export holds the publish lock {self.path} "
                        f"(waited {self.timeout:g} s); nothing published"
                    ) from None
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk (fsync works on the inode, any descriptor)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames and new entries in a folder durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
