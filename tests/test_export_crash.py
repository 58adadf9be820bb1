"""An export killed half-way (SIGKILL in a child process, after it has written part of the new
version) leaves the old version readable and whole; the next export succeeds.

Leftovers, per sink: Parquet keeps `versions/.staging-<version>/` and SQLite keeps the
committed chunks in `<table>__stg_<version>` until the next publish removes them under its
lock (readers never look at those names); PostgreSQL keeps nothing (the whole load is one
transaction, rolled back when the server sees the connection drop).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from export import (
    COLUMNS,
    GateConfig,
    current_version,
    make_sink,
    publish,
    read_version,
    rows_checksum,
)
from export.synthetic import SyntheticLists
from tests.export_fakes import version_reader

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = {"config": {}, "data_fingerprint": "fp-crash", "code_version": "test"}
DATA = {"n_learners": 500, "k": 5, "n_courses": 60, "chunk_learners": 50}
STALL_AFTER = 4  # chunks written before the child signals and waits to be killed

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from export import GateConfig, make_sink, publish
    from export.synthetic import SyntheticLists

    args = json.loads(sys.argv[1])
    data = SyntheticLists(**args["data"])

    def chunks():
        for i, chunk in enumerate(data.chunks()):
            if i == args["stall_after"]:
                open(args["signal"], "w").close()
                time.sleep(600)  # killed here
            yield chunk

    publish(chunks(), sink=make_sink(**args["sink"]), gates=GateConfig(k=data.k),
            learners=data.learner_ids, catalogue=data.course_ids, manifest=args["manifest"],
            write_ahead=0)
    """
)


def _sink_args(kind: str, tmp_path: Path, request) -> dict:
    if kind == "parquet":
        return {"kind": "parquet", "path": str(tmp_path / "lists")}
    if kind == "sqlite":
        return {"kind": "sqlite", "path": str(tmp_path / "lists.db"), "table": "lists"}
    url = request.getfixturevalue("postgres_url")
    return {"kind": "postgresql", "url": url, "table": f"t{uuid.uuid4().hex[:12]}"}


def _query(sink: dict, sql: str) -> list[tuple]:
    if sink["kind"] == "sqlite":
        con = sqlite3.connect(sink["path"])
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    import psycopg

    with psycopg.connect(sink["url"], autocommit=True) as con:
        return con.execute(sql).fetchall()


def _read_live(sink: dict) -> pa.Table:
    if sink["kind"] == "parquet":
        return read_version(current_version(sink["path"]))
    rows = _query(sink, f'SELECT * FROM "{sink["table"]}" ORDER BY learner_id, rank')
    return pa.Table.from_pylist([dict(zip(COLUMNS, r, strict=True)) for r in rows])


def _tables(sink: dict) -> list[str]:
    if sink["kind"] == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    return sorted(n for (n,) in _query(sink, sql) if n.startswith(sink["table"]))


def _partial_new_version(sink: dict) -> int:
    """Evidence that the killed child had written part of its version: rows or bytes staged."""
    if sink["kind"] == "parquet":
        staged = list((Path(sink["path"]) / "versions").glob(".staging-*/part-*"))
        return sum(p.stat().st_size for p in staged)
    if sink["kind"] == "sqlite":
        staging = [t for t in _tables(sink) if "__stg_" in t]
        return sum(_query(sink, f'SELECT count(*) FROM "{t}"')[0][0] for t in staging)
    rows = _query(sink, "SELECT bytes_processed FROM pg_stat_progress_copy")
    return sum(r[0] for r in rows)


def _publish(sink: dict, data: SyntheticLists):
    return publish(
        data.chunks(),
        sink=make_sink(**sink),
        gates=GateConfig(k=data.k),
        learners=data.learner_ids,
        catalogue=data.course_ids,
        manifest=PROVENANCE,
    )


@pytest.mark.parametrize("kind", ["parquet", "sqlite", "postgresql"])
def test_a_killed_export_leaves_the_old_version_and_the_next_one_succeeds(tmp_path, request, kind):
    sink = _sink_args(kind, tmp_path, request)
    old, killed, new = (
        SyntheticLists(**DATA, model_version=m, seed=i) for i, m in enumerate("abc")
    )
    checksums = {
        d.model_version: rows_checksum(pa.concat_tables(d.chunks())) for d in (old, killed, new)
    }
    _publish(sink, old)

    signal_file = tmp_path / "stalled"
    args = {
        "data": {**DATA, "model_version": "b", "seed": 1},
        "sink": sink,
        "stall_after": STALL_AFTER,
        "signal": str(signal_file),
        "manifest": PROVENANCE,
    }
    # pause: leave the CPUs to the export child
    with version_reader(lambda: _read_live(sink), checksums, pause=0.05) as (seen, errors):
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=ROOT)
        try:
            deadline = time.monotonic() + 120
            while not signal_file.exists():
                assert child.poll() is None, "the export child died before stalling"
                assert time.monotonic() < deadline, "the export child never stalled"
                time.sleep(0.02)
            time.sleep(0.2)  # let the reader read while the new version is half-written
            assert _partial_new_version(sink) > 0
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            after_kill = _read_live(sink)
        finally:
            if child.poll() is None:
                child.kill()
    assert not errors, errors[:3]
    assert set(seen) == {"a"}
    assert rows_checksum(after_kill) == checksums["a"]

    result = _publish(sink, new)
    assert rows_checksum(_read_live(sink)) == checksums["c"] == result.manifest["checksum"]["hex"]
    if kind == "parquet":
        versions = sorted(p.name for p in (Path(sink["path"]) / "versions").iterdir())
        assert len(versions) == 2 and not [v for v in versions if v.startswith(".")]
    else:
        assert not [t for t in _tables(sink) if "__stg_" in t]
        assert len(_tables(sink)) == 3  # live, the previous version, the manifest table
