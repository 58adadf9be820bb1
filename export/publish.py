"""`publish`: a stream of ranked-list chunks -> gates -> a new version in a sink, atomically.

One pass over the stream: each chunk is converted to the export schema, checked by every gate
and counted here, while two worker threads hash it and hand it to the sink's staging area.
Memory is bounded by a few chunks (the one being checked, and `write_ahead` handed to each
worker and not yet done; two with the default), never the whole list.
At the end the gates decide: all passed -> the sink swaps the new version in (readers see the
old version or the new one); any failed -> the staging area is removed and `GateError` says
which gates, with counts and examples. Any other error also removes the staging area.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from export.checksum import RowChecksum, RowOrder
from export.gates import GateConfig, GateError, Gates
from export.manifest import Counts, build_manifest, check_provenance, new_version
from export.rows import LEARNER, SCORE, EmptyInputError, export_schema, iter_tables
from export.sinks.base import Sink

__all__ = ["publish", "PublishResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    """version: the new version's name; location: its folder (file sinks, absolute) or the live table
    name (SQL sinks); manifest: what was stored beside it; prune_errors: old versions the sink
    could not remove after the swap, with the reason ("<table or folder>: <reason>"; logged as
    a warning too). They stay, and the next publish tries again; the new version is live."""

    version: str
    location: str
    manifest: dict[str, Any]
    prune_errors: tuple[str, ...] = ()


def _positive_zero_scores(table: pa.Table) -> pa.Table:
    """-0.0 scores as 0.0 (x + 0.0 is +0.0 for x = -0.0, x otherwise): SQLite stores -0.0 as
    0.0, so without this the manifest's checksum would not match the rows read back there; done
    for every sink so the same rows have the same checksum everywhere."""
    i = table.schema.get_field_index(SCORE)
    col = table.column(i)
    if not pc.any(pc.equal(col, 0.0)).as_py():  # a bitmap (1 bit a row): no zero, no copy
        return table
    return table.set_column(i, table.schema.field(i), pc.add(col, 0.0))


class _Worker:
    """Runs `fn` on each chunk on a background thread, with at most `ahead` chunks handed to
    it and not yet done (queued or in progress), so the producer thread checks chunk i+1 while
    the worker handles chunk i, and a chunk is freed as soon as both are done with it. The
    sinks' writers (Parquet encoding, a COPY to a socket, SQLite's inserts) and sha256 release
    the GIL, so the work overlaps on separate cores. `ahead=0` runs `fn` inline."""

    def __init__(self, fn, ahead: int, name: str):
        self.fn, self.ahead = fn, ahead
        self._error: BaseException | None = None
        if ahead > 0:
            self._slots = threading.BoundedSemaphore(ahead)
            self._queue: queue.SimpleQueue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:  # after an error keep draining, so put() never blocks
                try:
                    self.fn(item)
                except BaseException as err:  # re-raised in the producer's thread
                    self._error = err
            del item  # free the chunk before waiting for the next one
            self._slots.release()

    def put(self, item) -> None:
        if self.ahead == 0:
            self.fn(item)
            return
        if self._error is not None:
            raise self._error
        self._slots.acquire()
        self._queue.put(item)

    def close(self) -> None:
        if self.ahead > 0 and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


def publish(
    rows: Any,
    *,
    sink: Sink,
    gates: GateConfig,
    learners: Any,
    catalogue: Any,
    eligible_learners: Any = None,
    watched: Any = None,
    manifest: Mapping[str, Any],
    chunk_learners: int = 50_000,
    write_ahead: int = 1,
) -> PublishResult:
    """Publish ranked lists as a new version of `sink`, if every quality gate passes.

    rows: an iterable of chunks (pandas DataFrames or Arrow tables, whole learners each, a
        learner's rows contiguous in rank order), or one whole DataFrame / Arrow table, cut
        into chunks of `chunk_learners` learners.
    learners, catalogue: the learner table's and the catalogue's ids (any id set: list, array,
        Index, Series, watchlog IdMap); their kind (integer or string) fixes the id columns'.
    eligible_learners: learners that must have exactly `gates.k` rows (default: all learners).
    watched: already-watched pairs, `WatchedPairs(matrix, learner_ids, course_ids)` or a table
        with learner_id and course_id; None skips the `not_watched` gate (recorded as skipped).
    manifest: provenance stored with the version: `config`, `data_fingerprint` and
        `code_version` (required), any other JSON-able keys kept as given.
    write_ahead: chunks handed to the writer and the checksum threads and not yet done
        (0: both inline, no overlap).

    Scores of -0.0 are written (and hashed) as 0.0. The manifest's `checksum.order` says
    whether the rows came in canonical order ("learner_id, rank": ascending learner ids,
    strings by UTF-8 bytes, ranks ascending), which lets a SQL table's rows be verified
    (`export.sqlread`), or not ("publish"): publish learners sorted by id to get it.

    Raises `GateError` (gates failed), `RowError` (a chunk breaks the row contract),
    `EmptyInputError` (no rows), `SinkError` (the sink refused); in every case nothing was
    published and the staging area was removed.
    """
    if isinstance(write_ahead, bool) or not isinstance(write_ahead, int) or write_ahead < 0:
        raise ValueError(
            f"write_ahead: chunks handed to each worker thread ahead, an integer >= 0 "
            f"(0: no threads), got {write_ahead!r}"
        )
    check_provenance(manifest)
    checker = Gates(
        gates,
        learners=learners,
        catalogue=catalogue,
        eligible_learners=eligible_learners,
        watched=watched,
    )
    schema = export_schema(checker.learner_kind, checker.course_kind)
    counts = Counts(checker.sources, checker.versions)
    checksum = RowChecksum(schema)
    order = RowOrder()  # canonical order lets a SQL reader verify the checksum (ORDER BY)
    version = new_version()
    staging = sink.open(version, schema)  # connects and checks before any chunk is read
    workers: list[_Worker] = []
    try:
        writer = _Worker(staging.write, write_ahead, "export-writer")
        workers.append(writer)
        hasher = _Worker(lambda item: checksum.update(*item), write_ahead, "export-checksum")
        workers.append(hasher)
        for table in iter_tables(rows, schema, chunk_learners=chunk_learners):
            table = _positive_zero_scores(table)  # before the gates, the checksum and the sink
            view = checker.view(table)
            checker.update(view)
            counts.update(view)
            order.update(table.column(LEARNER).chunk(0), view.starts, view.rank)
            hasher.put((table, view.runs))
            if not checker.failing:  # once a gate has failed, count to the end, load no more
                writer.put(table)
        while workers:
            workers.pop().close()
        if counts.rows == 0:
            raise EmptyInputError(
                "rows: the stream held no rows; nothing was published (an empty version would "
                "blank every learner's list in the services that read it)"
            )
        results = checker.results()
        stored = build_manifest(
            version=version,
            provenance=manifest,
            sink=sink.describe(),
            gate_config=gates,
            gate_results=results,
            counts=counts,
            checksum=checksum.hexdigest(),
            checksum_order=order.order,
            schema=schema,
        )
        failed = [r for r in results if r.passed is False]
        if failed:
            raise GateError(failed, stored)
        location, stored = staging.commit(stored)
    except BaseException:
        for worker in workers:
            with contextlib.suppress(BaseException):
                worker.close()
        staging.abort()
        raise
    # Sinks that remove old versions after the swap say what they could not remove.
    prune_errors = tuple(getattr(staging, "prune_errors", ()))
    if prune_errors:
        log.warning(
            "%r: version %s is published, but %d old version(s) could not be removed; they "
            "stay until the next publish removes them: %s",
            sink,
            version,
            len(prune_errors),
            "; ".join(prune_errors),
        )
    return PublishResult(version, location, stored, prune_errors)
