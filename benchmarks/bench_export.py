"""Publishing 1,000,000 learners x top-100 (100M rows) with `export.publish`, gates included,
to Parquet, SQLite and PostgreSQL, against the plain way to write the same rows.

    python -m benchmarks.bench_export                     # 1M learners (~10 min on 2 cores)
    python -m benchmarks.bench_export --learners 20000    # a small run (~1 min)
    python -m benchmarks.bench_export --learners 250000 --name export_250k  # cost vs size

Data (`export.synthetic.SyntheticLists`, seed 0): 10,000 courses, top-100 lists, 20% of the
learners on the fallback source, 20 watched courses per learner (a 1M x 10k CSR handed to the
`not_watched` gate), generated chunk by chunk with numpy (50,000 learners = 5M rows a chunk).

Measured, each in a fresh Python process so `peak_rss_gib` (VmHWM) is that measurement's own:
  generate only            the producer alone: every chunk made and dropped (part of each
                           export's time below, since the export consumes a live stream);
  parquet: publish         every gate, the checksum, part file + manifest, fsync, `current`
                           swapped; one row group per chunk (`ParquetWriter`);
  parquet: write_table     (peer) `pyarrow.parquet.write_table` of the whole table held in
                           memory; its time is the call alone, the table built beforehand;
  sqlite: publish          staging table, multi-row INSERTs, swap (no peer: reported alone);
  postgresql: publish      binary COPY ... FREEZE into a staging table + swap, one transaction;
  postgresql: COPY csv     (peer) the rows written to a CSV file with pyarrow's CSV writer
                           (`csv_write_s`, reported apart), then `COPY ... FROM STDIN (FORMAT
                           csv, FREEZE)` of that file into a table created in the same
                           transaction (`seconds` = the COPY alone).
SQL tables are built without an index (`index=False`; the peers build none); PostgreSQL is a
throwaway pgserver cluster (PostgreSQL 16, default settings) on 127.0.0.1 unless `--pg-url`;
its server process's memory is not in the peak. `time_over_peer` = seconds / the peer's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import peak_rss_gib, print_table, run_child, write_result

K = 100
COURSES = 10_000
CHUNK = 50_000
WATCHED = 20
METHODS = (
    "generate only",
    "parquet: publish",
    "parquet: write_table (peer)",
    "sqlite: publish",
    "postgresql: publish",
    "postgresql: COPY csv (peer)",
)
PEERS = {
    "parquet: publish": "parquet: write_table (peer)",
    "postgresql: publish": "postgresql: COPY csv (peer)",
}


def _data(task: dict[str, Any]):
    from export.synthetic import SyntheticLists

    return SyntheticLists(
        n_learners=task["learners"],
        k=K,
        n_courses=COURSES,
        chunk_learners=task["chunk"],
        watched_per_learner=WATCHED,
        fallback_share=0.2,
        model_version="bench-export-v1",
    )


def _publish(task: dict[str, Any], sink) -> dict[str, Any]:
    from export import GateConfig, publish

    data = _data(task)
    watched = data.watched()  # the caller's input, built before the clock starts
    base = peak_rss_gib()
    start = time.perf_counter()
    result = publish(
        data.chunks(),
        sink=sink,
        gates=GateConfig(k=K, min_coverage=0.5, max_fallback_share=0.5),
        learners=data.learner_ids,
        catalogue=data.course_ids,
        watched=watched,
        manifest={"config": task, "data_fingerprint": "synthetic seed 0", "code_version": "bench"},
        write_ahead=task["write_ahead"],
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": result.manifest["counts"]["rows"],
        "peak_rss_gib": peak_rss_gib(),
        "input_rss_gib": base,
        "gates_passed": result.manifest["gates"]["passed"],
    }


def _parquet_peer(task: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(_data(task).chunks())
    base = peak_rss_gib()
    start = time.perf_counter()
    pq.write_table(table, Path(task["dir"]) / "peer.parquet")
    return {
        "seconds": time.perf_counter() - start,
        "rows": table.num_rows,
        "peak_rss_gib": peak_rss_gib(),
        "input_rss_gib": base,
    }


def _postgres_peer(task: dict[str, Any]) -> dict[str, Any]:
    import psycopg
    import pyarrow.csv as pcsv

    data = _data(task)
    path = Path(task["dir"]) / "peer.csv"
    start = time.perf_counter()
    with pcsv.CSVWriter(
        path, data.schema, write_options=pcsv.WriteOptions(include_header=False)
    ) as w:
        for chunk in data.chunks():
            w.write_table(chunk)
    csv_seconds = time.perf_counter() - start
    columns = "learner_id bigint, rank integer, course_id bigint, score double precision, " + (
        "source text, model_version text"
    )
    start = time.perf_counter()
    with psycopg.connect(task["url"]) as con, con.cursor() as cur:
        cur.execute(f"CREATE TABLE peer_copy ({columns})")
        with (
            cur.copy("COPY peer_copy FROM STDIN (FORMAT csv, FREEZE)") as copy,
            open(path, "rb") as f,
        ):
            while block := f.read(8 << 20):
                copy.write(block)
        con.commit()
    seconds = time.perf_counter() - start
    with psycopg.connect(task["url"], autocommit=True) as con:
        rows = con.execute("SELECT count(*) FROM peer_copy").fetchone()[0]
        con.execute("DROP TABLE peer_copy")
    return {
        "seconds": seconds,
        "csv_write_s": csv_seconds,
        "csv_gib": path.stat().st_size / 2**30,
        "rows": rows,
        "peak_rss_gib": peak_rss_gib(),
    }


def _generate(task: dict[str, Any]) -> dict[str, Any]:
    data = _data(task)
    start = time.perf_counter()
    rows = sum(chunk.num_rows for chunk in data.chunks())
    return {"seconds": time.perf_counter() - start, "rows": rows, "peak_rss_gib": peak_rss_gib()}


def _run(task: dict[str, Any]) -> dict[str, Any]:
    from export import ParquetSink, PostgresSink, SqliteSink

    method, out = task["method"], Path(task["dir"])
    if method == "generate only":
        return _generate(task)
    if method == "parquet: publish":
        return _publish(task, ParquetSink(out / "lists", keep_versions=1))
    if method == "parquet: write_table (peer)":
        return _parquet_peer(task)
    if method == "sqlite: publish":
        sink = SqliteSink(
            out / "lists.db",
            table="lists",
            index=False,
            rows_per_statement=task["rows_per_statement"],
        )
        return _publish(task, sink)
    if method == "postgresql: publish":
        res = _publish(task, PostgresSink(task["url"], table="bench", keep_versions=1, index=False))
        import psycopg

        with psycopg.connect(task["url"], autocommit=True) as con:
            con.execute('DROP TABLE IF EXISTS "bench"')
            con.execute('DROP TABLE IF EXISTS "bench__manifest"')
        return res
    if method == "postgresql: COPY csv (peer)":
        return _postgres_peer(task)
    raise ValueError(method)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=1_000_000, help="learners (x 100 rows)")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="learners per chunk")
    parser.add_argument("--write-ahead", type=int, default=1, help="publish(write_ahead=...)")
    parser.add_argument(
        "--rows-per-statement", type=int, default=100, help="SqliteSink(rows_per_statement=...)"
    )
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--pg-url", help="an existing PostgreSQL (default: a throwaway one)")
    parser.add_argument("--dir", help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--name", default="export", help="results/<name>.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_run(json.loads(args.worker))), flush=True)
        return []

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_export_"))
    server, url = None, args.pg_url
    try:
        if url is None and any(m.startswith("postgresql") for m in args.methods):
            from export.pgtest import start_postgres

            server = start_postgres(scratch / "pg")
            url = server.url
        results = {}
        for method in args.methods:
            work = scratch / "work"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            task = {
                "method": method,
                "learners": args.learners,
                "chunk": args.chunk,
                "write_ahead": args.write_ahead,
                "rows_per_statement": args.rows_per_statement,
                "dir": str(work),
                "url": url,
            }
            res = run_child("benchmarks.bench_export", "--worker", json.dumps(task))
            results[method] = res
            print(
                f"  {method:<30} {res['rows']:>12,} rows  {res['seconds']:8.2f} s  "
                f"peak {res['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
        shutil.rmtree(scratch / "work", ignore_errors=True)
    finally:
        if server is not None:
            server.stop()
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)

    rows = []
    generate = results.get("generate only", {}).get("seconds")
    for method, res in results.items():
        peer = results.get(PEERS.get(method, ""))
        # publish times include making the stream; the peers' do not (their table or file
        # was made before the clock started): the same ratio without the generator's time
        net = res["seconds"] - generate if generate and method.endswith("publish") else None
        rows.append(
            {
                "method": method,
                "learners": args.learners,
                "rows": res["rows"],
                "seconds": round(res["seconds"], 2),
                "rows_per_s": round(res["rows"] / res["seconds"]),
                "peak_rss_gib": round(res["peak_rss_gib"], 3),
                "input_rss_gib": round(res["input_rss_gib"], 3) if "input_rss_gib" in res else "-",
                "time_over_peer": round(res["seconds"] / peer["seconds"], 2) if peer else "-",
                "net_time_over_peer": round(net / peer["seconds"], 2) if peer and net else "-",
                "memory_over_peer": round(res["peak_rss_gib"] / peer["peak_rss_gib"], 2)
                if peer
                else "-",
                "csv_write_s": round(res["csv_write_s"], 2) if "csv_write_s" in res else "-",
            }
        )
    print_table(rows, f"export: {args.learners:,} learners x top-{K}, {COURSES:,} courses")
    write_result(
        args.name,
        rows,
        units={
            "seconds": "wall clock of the measured call (publish: the whole publish, chunk "
            "generation included; peers: the write alone)",
            "rows_per_s": "rows / seconds",
            "peak_rss_gib": "GiB, peak resident memory of the measuring process (VmHWM)",
            "input_rss_gib": "GiB, peak resident memory before the timed call (inputs built)",
            "time_over_peer": "seconds / the peer's seconds",
            "net_time_over_peer": "(seconds - generate only seconds) / the peer's seconds",
            "memory_over_peer": "peak_rss_gib / the peer's peak_rss_gib",
            "csv_write_s": "seconds to write the CSV file the COPY peer reads (not in seconds)",
        },
        chunk_learners=args.chunk,
        k=K,
        courses=COURSES,
        watched_per_learner=WATCHED,
        write_ahead=args.write_ahead,
        sqlite_rows_per_statement=args.rows_per_statement,
        cpu_count=os.cpu_count(),
        load_average_at_end=list(os.getloadavg()),
        postgresql="throwaway pgserver cluster, PostgreSQL 16, defaults" if server else "given",
    )
    return rows


if __name__ == "__main__":
    main()
