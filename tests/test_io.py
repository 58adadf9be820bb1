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
