"""What the export tests share: small synthetic lists, a publish with every gate, and a reader
thread that checks every read is one whole version."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa

from export import GateConfig, publish, rows_checksum
from export.synthetic import SyntheticLists

PROVENANCE = {"config": {"k": 5}, "data_fingerprint": "fp-test", "code_version": "test"}


def lists(**kw) -> SyntheticLists:
    return SyntheticLists(**{"n_learners": 80, "k": 5, "n_courses": 50, "chunk_learners": 30, **kw})


def run(data: SyntheticLists, sink, **kw):
    """Publish `data` to `sink` with the default gates and the test provenance."""
    args = {
        "sink": sink,
        "gates": GateConfig(k=data.k),
        "learners": data.learner_ids,
        "catalogue": data.course_ids,
        "manifest": PROVENANCE,
    }
    return publish(data.chunks(), **{**args, **kw})


@contextmanager
def version_reader(
    read: Callable[[], pa.Table], checksums: dict[str, str], pause: float = 0.0
) -> Iterator[tuple[list, list]]:
    """Read the live version in a thread until the block ends; yields (seen, errors): the
    model_version of every read, and every read that was not one whole known version."""
    seen: list = []
    errors: list = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                table = read()
            except Exception as err:  # noqa: BLE001 - every failure is a test failure
                errors.append(repr(err))
                continue
            tags = table.column("model_version").unique().to_pylist()
            seen.append(tags[0] if tags else None)
            if len(tags) != 1 or rows_checksum(table) != checksums[tags[0]]:
                errors.append(f"mixed, empty or altered version: {tags}")
            time.sleep(pause)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        yield seen, errors
    finally:
        stop.set()
        thread.join()
