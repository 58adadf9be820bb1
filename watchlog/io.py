"""Atomic writes: a crash leaves the old file or the new one, never half of one.

Every writer here goes to a temporary file in the destination folder (same file
system, so the final `os.replace` is atomic) and renames it into place. The new data is
fsynced before the rename and the folder after it: without that, an OS crash or power loss
can leave the rename on disk but not the data (an empty file where the old one was).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CorruptFolderError",
    "atomic_path",
    "atomic_directory",
    "exchange_paths",
    "fsync_dir",
    "fsync_file",
    "read_folder_json",
    "write_json",
    "write_parquet",
    "write_text",
    "to_jsonable",
]


class CorruptFolderError(ValueError):
    """A saved model folder whose files are unreadable, incomplete or inconsistent."""


def read_folder_json(path: str | os.PathLike) -> Any:
    """The JSON file of a saved folder; CorruptFolderError naming the file (and where it
    stops parsing) when it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CorruptFolderError(f"{path}: unreadable ({err})") from err


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it,
    briefly, for every thread)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk (fsync works on the inode, through any descriptor;
    Windows wants one open for writing)."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make new entries and renames in a folder durable. Skipped where folders cannot be
    opened for it (no O_DIRECTORY: Windows, whose renames are durable with the file system's
    journal) or the file system refuses a folder's fsync (EINVAL: some network ones)."""
    flag = getattr(os, "O_DIRECTORY", None)
    if flag is None:
        return
    fd = os.open(path, os.O_RDONLY | flag)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root`, then `root`, before it is renamed in."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            file = os.path.join(folder, name)
            if not os.path.islink(file):  # a link's target is not ours to flush
                fsync_file(file)
        fsync_dir(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds
    (data fsynced before the rename, the folder after it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes it 0600; plain open() would not
    try:
        yield tmp_path
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # the rename itself; after it, a failure here must not unlink


# renameat2(2) flag: swap two existing paths in one step (Linux >= 3.15, most local file
# systems: ext4, xfs, btrfs, tmpfs, overlayfs).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}


def _load_renameat2():
    """libc's renameat2 (glibc >= 2.28), else the raw syscall; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    args = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes, fn.restype = args, ctypes.c_int
        return fn
    number = _SYS_RENAMEAT2.get(platform.machine())
    if number is None:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long

    def renameat2(olddirfd, oldpath, newdirfd, newpath, flags):
        return syscall(
            ctypes.c_long(number),
            ctypes.c_int(olddirfd),
            ctypes.c_char_p(oldpath),
            ctypes.c_int(newdirfd),
            ctypes.c_char_p(newpath),
            ctypes.c_uint(flags),
        )

    return renameat2


_RENAMEAT2 = _load_renameat2()


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths atomically (`renameat2(RENAME_EXCHANGE)`); False where that is
    not possible here (not Linux, an old kernel, a file system without it, or `b` missing), so
    the caller can fall back. Other errors raise OSError."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `directory`; swap it in if the block succeeds.

    A reader sees the old directory or the new one, never a half-written one, and never no
    directory: where `directory` exists, the two are exchanged in one step
    (`renameat2(RENAME_EXCHANGE)` through ctypes, Linux), then the old one (now at the
    temporary name) is removed. Fallback where the exchange is unavailable (other systems,
    kernels before 3.15, file systems without it): the old directory is renamed aside, then
    the new one renamed in, which leaves a moment with no `directory` at all (a reader then
    gets FileNotFoundError and should retry). A first write is a plain atomic rename.
    """
    directory = Path(directory)
    if os.path.lexists(directory) and not directory.is_dir():
        raise FileExistsError(
            f"{directory}: exists and is not a folder; refusing to replace it with one (remove "
            "it, or choose another path)"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700: readers of other users need it
        yield tmp
        _fsync_tree(tmp)  # durable before it is swapped in, not only after
        if exchange_paths(tmp, directory):
            fsync_dir(directory.parent)
            _remove(tmp)  # the old directory now lives at the temporary name
            return
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        fsync_dir(directory.parent)
        if old is not None:
            _remove(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def to_jsonable(obj: Any) -> Any:
    """Numpy / pandas scalars and containers to plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_parquet(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)
