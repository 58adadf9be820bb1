"""watchlog.io.atomic_directory: the folder swap leaves no moment without the folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from watchlog import io
from watchlog.io import atomic_directory, exchange_paths

FILES = ("a.txt", "b.txt", "c.txt")


def _fill(tmp: Path, stamp: int) -> None:
    for name in FILES:
        (tmp / name).write_text(str(stamp))


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_first_write_and_replace_leave_only_the_new_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        _fill(tmp, 1)
    with atomic_directory(target) as tmp:
        assert (target / "a.txt").read_text() == "1"  # the old one is readable meanwhile
        (tmp / "only-new.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["only-new.txt"]
    assert _siblings(target) == []  # temporary and old folders are gone


def test_an_error_keeps_the_old_folder_and_removes_the_temporary_one(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        _fill(tmp, 1)
    with pytest.raises(RuntimeError, match="half-way"), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("partial")
        raise RuntimeError("half-way")
    assert (target / "a.txt").read_text() == "1"
    assert _siblings(target) == []


def test_a_file_at_the_target_is_not_replaced_by_a_folder(tmp_path):
    target = tmp_path / "model"
    target.write_text("someone's file")
    with pytest.raises(FileExistsError, match="not a folder"), atomic_directory(target) as tmp:
        _fill(tmp, 1)
    assert target.read_text() == "someone's file"
    assert _siblings(target) == []


def test_exchange_is_used_on_linux(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux-only; the fallback is tested below")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from-a").touch()
    assert exchange_paths(a, b)
    assert [p.name for p in b.iterdir()] == ["from-a"] and not list(a.iterdir())
    assert not exchange_paths(a, tmp_path / "missing")  # nothing to exchange with: fall back


def test_fallback_without_exchange_still_swaps(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "exchange_paths", lambda a, b: False)
    target = tmp_path / "model"
    for stamp in (1, 2):
        with atomic_directory(target) as tmp:
            _fill(tmp, stamp)
    assert (target / "a.txt").read_text() == "2"
    assert _siblings(target) == []


# The reader only asks for the folder itself: a file lookup that started in the old folder
# can still lose the race with that folder's removal, with or without the exchange.
READER = textwrap.dedent(
    """
    import json, os, sys
    target, ready, stop = sys.argv[1:4]
    reads = missing = 0
    open(ready, "w").close()
    while not os.path.exists(stop):
        try:
            os.stat(target)
            os.listdir(target)
        except FileNotFoundError:
            missing += 1
            continue
        reads += 1
    print(json.dumps({"reads": reads, "missing": missing}))
    """
)


def test_a_polling_reader_always_finds_the_folder_during_swaps(tmp_path):
    if io._RENAMEAT2 is None:
        pytest.skip("no renameat2 here: the documented fallback leaves a gap")
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        _fill(tmp, 0)
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(target), str(ready), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "the reader did not start"
            time.sleep(0.01)
        for stamp in range(1, 401):
            with atomic_directory(target) as tmp:
                _fill(tmp, stamp)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["missing"] == 0, seen
    assert seen["reads"] > 100, seen  # it really polled while the swaps ran
    assert (target / "a.txt").read_text() == "400"
    assert _siblings(target) == ["ready", "stop"]


def test_folders_and_files_get_the_mode_plain_creation_would(tmp_path):
    # mkdtemp / mkstemp create owner-only entries; a service reading the published folder as
    # another user needs the umask's mode, as os.mkdir / open() would give.
    from watchlog.io import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "lists") as tmp:
            _fill(tmp, 1)
        with atomic_path(tmp_path / "f.txt") as p:
            p.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "lists").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def _record_fsyncs(monkeypatch, watch: Path | None = None) -> list:
    """Patch os.fsync to record (st_dev, st_ino) of every synced file or folder, in order;
    with `watch`, (st_dev, st_ino, whether `watch` existed at that moment)."""
    synced: list = []
    real = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        extra = () if watch is None else (watch.exists(),)
        synced.append((st.st_dev, st.st_ino, *extra))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def _key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def test_atomic_path_syncs_the_data_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    # Without both, an OS crash can keep the rename but not the data: an empty file.
    target = tmp_path / "metrics.json"
    synced = _record_fsyncs(monkeypatch, watch=target)
    with io.atomic_path(target) as tmp:
        tmp.write_text("new")
        written = _key(tmp)  # the rename keeps the inode
    assert target.read_text() == "new" and _key(target) == written
    # the file while `target` did not exist yet (before the rename), the folder after it
    assert synced == [(*written, False), (*_key(tmp_path), True)]


def test_atomic_directory_syncs_every_file_and_the_folder_before_the_swap(tmp_path, monkeypatch):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        _fill(tmp, 1)
    synced = _record_fsyncs(monkeypatch, watch=target / "sub")  # only in the new folder
    with atomic_directory(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "deep.txt").write_text("2")
        _fill(tmp, 2)
        files = [_key(tmp / n) for n in FILES] + [_key(tmp / "sub" / "deep.txt")]
        folders = [_key(tmp / "sub"), _key(tmp)]
    assert (target / "a.txt").read_text() == "2" and _key(target) == folders[-1]
    # every file and folder of the new one before the swap, the parent (the swap) after it
    assert sorted(synced[:-1]) == sorted((*k, False) for k in files + folders)
    assert synced[-1] == (*_key(tmp_path), True)
    order = [s[:2] for s in synced]
    assert order.index(folders[-1]) > max(order.index(f) for f in files)


def test_without_directory_fsync_the_writes_still_work(tmp_path, monkeypatch):
    # Windows has no O_DIRECTORY: the folder's fsync is skipped, the files' are not.
    monkeypatch.delattr(os, "O_DIRECTORY", raising=False)
    synced = _record_fsyncs(monkeypatch)
    io.write_json(tmp_path / "m.json", {"a": 1})
    with atomic_directory(tmp_path / "model") as tmp:
        _fill(tmp, 1)
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert (tmp_path / "model" / "c.txt").read_text() == "1"
    assert sorted(synced) == sorted(
        [_key(tmp_path / "m.json")] + [_key(tmp_path / "model" / n) for n in FILES]
    )
