"""File sinks: versions behind an atomically swapped `current`, manifest, pruning, leftovers,
readers during publishes, the Hydra config."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from export import (
    ChecksumError,
    CsvSink,
    GateConfig,
    GateError,
    JsonlSink,
    ParquetSink,
    SinkError,
    current_version,
    publish,
    read_manifest,
    read_version,
    rows_checksum,
)
from export.manifest import new_version
from export.sinks.base import FileLock
from tests.export_fakes import PROVENANCE, lists, run

ROOT = Path(__file__).resolve().parents[1]
SINKS = {"parquet": ParquetSink, "csv": CsvSink, "jsonl": JsonlSink}


@pytest.mark.parametrize("kind", list(SINKS))
@pytest.mark.parametrize("string_ids", [False, True])
def test_round_trip_reads_back_the_published_rows(tmp_path, kind, string_ids):
    data = lists(string_ids=string_ids)
    result = run(data, SINKS[kind](tmp_path / "lists"))
    folder = current_version(tmp_path / "lists")
    assert str(folder) == result.location and folder.name == result.version
    table = read_version(folder)
    expected = pa.concat_tables(data.chunks())
    assert table.equals(expected)
    assert rows_checksum(table) == result.manifest["checksum"]["hex"] == rows_checksum(expected)
    stored = read_manifest(folder)
    assert stored == json.loads(json.dumps(result.manifest))
    assert stored["files"] == [
        {
            "name": f"part-00000.{kind}",
            "rows": 400,
            "bytes": (folder / f"part-00000.{kind}").stat().st_size,
        }
    ]
    assert stored["sink"]["kind"] == kind and stored["code_version"] == "test"
    assert stored["schema"]["learner_id"] == ("string" if string_ids else "int64")


def test_standard_parquet_readers_read_a_version_folder(tmp_path):
    # the manifest is `_manifest.json`: dataset readers skip names starting with "_"
    import pandas as pd
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    data = lists(string_ids=True)
    run(data, ParquetSink(tmp_path / "lists", max_rows_per_file=150))
    expected = pa.concat_tables(data.chunks())
    current = tmp_path / "lists" / "current"
    frame = pd.read_parquet(current)
    assert len(frame) == 400 and rows_checksum(frame) == rows_checksum(expected)
    assert pq.read_table(current).num_rows == 400
    assert ds.dataset(current, format="parquet").to_table().num_rows == 400
    assert (current / "_manifest.json").is_file() and not (current / "manifest.json").exists()


def test_a_version_written_with_the_old_manifest_name_still_reads(tmp_path):
    result = run(lists(), ParquetSink(tmp_path / "lists"))
    folder = Path(result.location)
    (folder / "_manifest.json").rename(folder / "manifest.json")  # as versions before it
    assert read_manifest(folder)["version"] == result.version
    assert read_version(folder).num_rows == 400


def test_read_version_resolves_current_once_so_a_publish_midway_mixes_nothing(
    tmp_path, monkeypatch
):
    import export.readers as readers

    data = lists()
    first = run(data, ParquetSink(tmp_path / "lists"))
    read_manifest_then_publish = readers.read_manifest

    def publish_after_the_manifest(folder):
        manifest = read_manifest_then_publish(folder)
        monkeypatch.setattr(readers, "read_manifest", read_manifest_then_publish)
        run(lists(model_version="m2"), ParquetSink(tmp_path / "lists"))  # lands mid-read
        return manifest

    monkeypatch.setattr(readers, "read_manifest", publish_after_the_manifest)
    table = read_version(tmp_path / "lists" / "current", verify=True)
    assert current_version(tmp_path / "lists").name != first.version  # the publish happened
    assert rows_checksum(table) == first.manifest["checksum"]["hex"]


def test_read_version_checks_part_row_counts_and_optionally_the_checksum(tmp_path):
    import pyarrow.parquet as pq

    result = run(lists(), ParquetSink(tmp_path / "lists", max_rows_per_file=150))
    folder = Path(result.location)
    part = folder / "part-00001.parquet"
    rows = pq.read_table(part)
    pq.write_table(rows.set_column(3, "score", pa.array(rows.column("score").to_numpy() + 1)), part)
    read_version(folder)  # same counts: only the checksum sees a changed score
    with pytest.raises(ChecksumError, match="do not match the manifest's checksum"):
        read_version(folder, verify=True)
    pq.write_table(rows.slice(0, 100), part)
    with pytest.raises(
        ChecksumError, match=r"part-00001.parquet: 100 rows read, the manifest lists 150"
    ):
        read_version(folder)


@pytest.mark.parametrize(
    ("keep_versions", "publishes", "survives"), [(1, 1, False), (2, 1, True), (2, 2, False)]
)
def test_a_version_pruned_during_a_read_says_why(tmp_path, keep_versions, publishes, survives):
    sink = ParquetSink(tmp_path / "lists", keep_versions=keep_versions)
    first = run(lists(), sink)
    folder = current_version(tmp_path / "lists")  # a reader resolved it, then publishes land
    for i in range(publishes):
        run(lists(model_version=f"m{i + 2}"), sink)
    if survives:  # at most keep_versions - 1 publishes during the read: still there
        assert read_version(folder, verify=True).num_rows == first.manifest["counts"]["rows"]
        return
    with pytest.raises(
        FileNotFoundError,
        match=r"removed while it was being read.*at most keep_versions - 1 publishes",
    ):
        read_version(folder)


def test_versions_rotate_current_moves_and_old_ones_are_pruned(tmp_path):
    root = tmp_path / "lists"
    sink = ParquetSink(root, keep_versions=2)
    results = [run(lists(model_version=f"m{i}"), sink) for i in range(3)]
    versions = sorted(p.name for p in (root / "versions").iterdir())
    assert versions == [r.version for r in results[1:]]  # the oldest is gone
    assert os.readlink(root / "current") == f"versions/{results[-1].version}"
    assert sorted(p.name for p in root.iterdir()) == [".history", ".lock", "current", "versions"]
    assert (root / ".history").read_text().split() == [r.version for r in results[1:]]
    assert read_version(current_version(root)).column("model_version").unique().to_pylist() == [
        "m2"
    ]


def test_part_files_roll_over_at_max_rows_per_file(tmp_path):
    result = run(lists(), ParquetSink(tmp_path / "lists", max_rows_per_file=200))
    files = result.manifest["files"]
    assert [f["rows"] for f in files] == [200, 200]  # chunks of 150 rows cut to fit
    assert read_version(result.location).num_rows == 400


@pytest.mark.parametrize("kind", list(SINKS))
def test_no_part_file_exceeds_max_rows_per_file_even_within_a_chunk(tmp_path, kind):
    data = lists()  # chunks of 150 rows, a limit far below that
    result = run(data, SINKS[kind](tmp_path / "lists", max_rows_per_file=7))
    rows = [f["rows"] for f in result.manifest["files"]]
    assert rows == [7] * 57 + [1]
    folder = Path(result.location)
    assert sorted(p.name for p in folder.glob("part-*")) == [
        f["name"] for f in result.manifest["files"]
    ]
    assert read_version(folder).equals(pa.concat_tables(data.chunks()))


def test_a_failed_gate_leaves_the_current_version_untouched(tmp_path):
    root = tmp_path / "lists"
    first = run(lists(), ParquetSink(root))
    with pytest.raises(GateError):
        run(lists(k=4), ParquetSink(root), gates=GateConfig(k=5))  # lists one short
    assert current_version(root).name == first.version
    assert sorted(p.name for p in (root / "versions").iterdir()) == [first.version]


def test_leftovers_of_a_killed_export_are_removed_by_the_next_publish(tmp_path):
    root = tmp_path / "lists"
    run(lists(), ParquetSink(root))
    staging = root / "versions" / ".staging-20000101T000000000000Z"
    staging.mkdir()
    (staging / "part-00000.parquet").write_bytes(b"half")
    (root / "versions" / ".trash-20000101T000000000000Z").mkdir()
    os.symlink("versions/nowhere", root / ".current-20000101T000000000000Z")
    run(lists(), ParquetSink(root))
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in root.iterdir()) == [".history", ".lock", "current", "versions"]


def _tags(root: Path) -> list[str]:
    """The model_version of every version folder, in name (= time) order."""
    folders = sorted((root / "versions").iterdir())
    return [read_version(p).column("model_version")[0].as_py() for p in folders]


def test_a_current_that_is_not_a_symlink_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "lists"
    (root / "current").mkdir(parents=True)  # say, a version copied in by hand
    with pytest.raises(SinkError, match="'current' exists and is not a symlink"):
        run(lists(), ParquetSink(root))
    assert sorted(p.name for p in root.iterdir()) == ["current"]


def test_a_refused_swap_leaves_no_version_behind(tmp_path, monkeypatch):
    root = tmp_path / "lists"
    first = run(lists(model_version="m0"), ParquetSink(root, keep_versions=2))

    def no_symlinks(*args):
        raise OSError("symlinks are not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    with pytest.raises(OSError, match="symlinks are not supported"):
        run(lists(model_version="never"), ParquetSink(root, keep_versions=2))
    monkeypatch.undo()
    assert sorted(p.name for p in (root / "versions").iterdir()) == [first.version]
    assert current_version(root).name == first.version
    run(lists(model_version="m1"), ParquetSink(root, keep_versions=2))
    assert _tags(root) == ["m0", "m1"]


def test_a_version_killed_before_its_swap_does_not_count_for_retention(tmp_path):
    root = tmp_path / "lists"
    first = run(lists(model_version="m0"), ParquetSink(root, keep_versions=2))
    # What a publish killed between its rename into versions/ and the swap leaves: a whole
    # version folder, newer than current, that was never served.
    shutil.copytree(current_version(root), root / "versions" / new_version())
    assert _tags(root) == ["m0", "m0"]
    second = run(lists(model_version="m1"), ParquetSink(root, keep_versions=2))
    assert sorted(p.name for p in (root / "versions").iterdir()) == [
        first.version,
        second.version,
    ]
    assert _tags(root) == ["m0", "m1"]


def test_retention_follows_the_order_versions_were_made_current(tmp_path):
    root = tmp_path / "lists"
    first, second = (run(lists(model_version=m), ParquetSink(root, keep_versions=3)) for m in "ab")
    (root / ".history").unlink()  # a root published before .history existed: name order
    third = run(lists(model_version="c"), ParquetSink(root, keep_versions=3))
    assert (root / ".history").read_text().split() == [first.version, second.version, third.version]
    link = root / ".rollback"
    os.symlink(f"versions/{first.version}", link)  # an operator rolls back to the first
    os.replace(link, root / "current")
    run(lists(model_version="d"), ParquetSink(root, keep_versions=2))
    assert _tags(root) == ["a", "d"]  # the rolled-back-to version was current most recently


def test_a_version_that_cannot_be_removed_is_reported_not_raised(tmp_path, monkeypatch, caplog):
    root = tmp_path / "lists"
    first = run(lists(model_version="m0"), ParquetSink(root, keep_versions=1))
    replace = os.replace

    def refuse_trash(src, dst):
        if Path(dst).name.startswith(".trash-"):
            raise PermissionError(13, "Permission denied", str(src))
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_trash)
    second = run(lists(model_version="m1"), ParquetSink(root, keep_versions=1))
    monkeypatch.undo()
    old = root / "versions" / first.version
    assert second.prune_errors == (f"{old}: [Errno 13] Permission denied: '{old}'",)
    assert first.version in caplog.text and "could not be removed" in caplog.text
    assert current_version(root).name == second.version and _tags(root) == ["m0", "m1"]
    run(lists(model_version="m2"), ParquetSink(root, keep_versions=1))
    assert _tags(root) == ["m2"]


def test_a_second_publisher_waits_for_the_lock_then_gives_up(tmp_path):
    root = tmp_path / "lists"
    root.mkdir()
    held = FileLock(root / ".lock", 1, "test").acquire()
    try:
        with pytest.raises(SinkError, match="another export holds the publish lock"):
            run(lists(), ParquetSink(root, lock_timeout=0.2))
    finally:
        held.release()
    assert not (root / "current").exists()


def test_a_reader_during_publishes_sees_whole_versions_only(tmp_path):
    root = tmp_path / "lists"
    datasets = [lists(model_version=f"m{i}", seed=i) for i in range(6)]
    checksums = {d.model_version: rows_checksum(pa.concat_tables(d.chunks())) for d in datasets}
    run(datasets[0], ParquetSink(root, keep_versions=3))
    seen, errors, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                table = read_version(current_version(root))
            except Exception as err:  # noqa: BLE001 - every failure is a test failure
                errors.append(repr(err))
                continue
            tags = table.column("model_version").unique().to_pylist()
            seen.append(tags[0])
            if len(tags) != 1 or rows_checksum(table) != checksums[tags[0]]:
                errors.append(f"mixed or altered version: {tags}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for data in datasets[1:]:
            run(data, ParquetSink(root, keep_versions=3))
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert len(seen) > 5 and seen == sorted(seen)  # versions only move forward
    assert read_version(current_version(root)).column("model_version")[0].as_py() == "m5"


def test_the_hydra_config_builds_the_publish_call(tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(  # the group alone, as any entry point that lists it gets it
            overrides=[
                "+paths=default",
                "+export=default",
                f"export.sink.path={tmp_path / 'lists.db'}",
                "export.sink.kind=sqlite",
                "export.sink.table=lists",
                "export.gates.k=5",
                "export.gates.min_coverage=0.5",
            ],
        )
    assert cfg.export.gates.fallback_sources == ["popular_segment", "popular_global"]
    publish_lists = instantiate(cfg.export.publish)
    data = lists()
    result = publish_lists(
        data.chunks(),
        learners=data.learner_ids,
        catalogue=data.course_ids,
        manifest={**PROVENANCE, "config": cfg.export},
    )
    assert result.location == "lists"
    assert result.manifest["gates"]["config"]["min_coverage"] == 0.5
    assert result.manifest["config"]["sink"]["kind"] == "sqlite"  # a DictConfig, stored plain
    assert result.manifest["sink"]["table"] == "lists"


def test_chunks_may_be_frames_tables_or_batches_and_ids_an_idmap(tmp_path):
    from watchlog.idmap import IdMap

    data = lists()
    frame = data.frame()
    chunks = [
        frame.iloc[:100],  # pandas, 20 learners
        pa.Table.from_pandas(frame.iloc[100:250], preserve_index=False),
        pa.Table.from_pandas(frame.iloc[250:], preserve_index=False)
        .combine_chunks()
        .to_batches()[0],
    ]
    result = publish(
        chunks,
        sink=ParquetSink(tmp_path / "lists"),
        gates=GateConfig(k=5),
        learners=IdMap(data.learner_ids, "learner_id"),
        catalogue=IdMap(data.course_ids, "course_id"),
        manifest=PROVENANCE,
    )
    assert result.manifest["counts"]["chunks"] == 3
    assert rows_checksum(read_version(result.location)) == rows_checksum(
        pa.Table.from_pandas(frame)
    )


def test_a_relative_root_records_an_absolute_location(tmp_path, monkeypatch):
    """export.json keeps the location; the report reads it later from another working
    directory, where a relative one ('outputs/lists/versions/...') was not found."""
    monkeypatch.chdir(tmp_path)
    result = run(lists(), ParquetSink("lists"))
    assert Path(result.location).is_absolute()
    assert Path(result.location) == (tmp_path / "lists" / "versions" / result.version).resolve()
