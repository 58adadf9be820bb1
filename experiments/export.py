"""The export stage: `python -m experiments.export run_dir=outputs/pipeline/<timestamp>`.

Wiring only (the logic is `export.publish`): the served lists the blend stage wrote
(`<run_dir>/blend/ranked_lists.parquet`) are read back in chunks of whole learners, stamped
with a `model_version` (the run folder and code version), checked by the quality gates
(`conf/export`: every learner of the learner table has k rows, no duplicate, nothing already
watched, scores finite and non-increasing, known ids, catalogue coverage, share of fallback
lists) and published as a new version of the sink (Parquet by default; CSV, JSONL, SQLite,
PostgreSQL by URL). A failed gate publishes nothing. `<run_dir>/export.json` records the result,
a failure too (`published: false` and the error), so an earlier success never stays there.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from blend.candidates import seen_in
from experiments.data import PreparedData, use_threads
from experiments.provenance import code_version
from experiments.retrain import command_overrides, rerun_in_run
from experiments.run_log import log_into_run_folder
from export import GateError, WatchedPairs
from watchlog.candidates import LEARNER
from watchlog.io import write_json
from watchlog.progress import progress

__all__ = ["export_run", "list_chunks", "run"]

_log = logging.getLogger(__name__)

LISTS = Path("blend") / "ranked_lists.parquet"


def list_chunks(path: Path, model_version: str) -> Iterator[pd.DataFrame]:
    """The lists file by row group, never splitting a learner: a learner cut at the end of a
    row group is carried over to the next chunk. Memory: one row group."""
    reader = pq.ParquetFile(path)
    carry: pd.DataFrame | None = None
    for i in range(reader.num_row_groups):
        frame = reader.read_row_group(i).to_pandas()
        if carry is not None:
            frame = pd.concat([carry, frame], ignore_index=True)
        ids = frame[LEARNER].to_numpy()
        changes = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        tail = int(changes[-1]) if len(changes) else 0  # where the last learner starts
        carry = frame.iloc[tail:]
        if tail:
            yield frame.iloc[:tail].assign(model_version=model_version)
    if carry is not None and len(carry):
        yield carry.assign(model_version=model_version)


def export_run(cfg: DictConfig, data: PreparedData, run_dir: Path) -> dict[str, Any]:
    """Publish `<run_dir>/blend/ranked_lists.parquet`; returns the version, location, row
    counts and every gate's result (also on a failed gate, which is then raised)."""
    path = run_dir / LISTS
    if not path.exists():
        raise FileNotFoundError(f"{path}: no served lists; run the blend stage first")
    start = time.perf_counter()
    e = cfg.export
    version = f"{run_dir.name}@{code_version()}"
    log = data.log
    # Everything a learner watched up to the lists' cutoff (the whole log) must be absent.
    watched = WatchedPairs(seen_in(log, log.events), log.learner_ids.index, log.course_ids.index)
    provenance = {
        "config": OmegaConf.to_container(cfg, resolve=True),  # URLs redacted by the manifest
        "data_fingerprint": log.fingerprint(),
        "code_version": code_version(),
        "run_dir": str(run_dir),
        "model_version": version,
    }
    out: dict[str, Any] = {"lists": str(path), "model_version": version}
    try:
        publish = instantiate(e.publish, _convert_="all")  # builds the sink: its errors too
        chunks = progress(
            list_chunks(path, version), total=pq.ParquetFile(path).num_row_groups,
            desc="export: checked and written chunks", unit="chunks", logger=_log,
        )  # fmt: skip
        result = publish(
            chunks,
            learners=log.learner_ids.index,
            catalogue=log.course_ids.index,
            eligible_learners=log.learner_ids.index,
            watched=watched,
            manifest=provenance,
        )
    except GateError as err:
        out.update(published=False, error=str(err), gates=err.manifest["gates"]["results"])
        write_json(run_dir / "export.json", out)
        raise
    except Exception as err:
        # A sink (or row) error publishes nothing either: replace an earlier run's record,
        # which may say published: true, before raising.
        out.update(published=False, error=f"{type(err).__name__}: {err}")
        write_json(run_dir / "export.json", out)
        raise
    m = result.manifest
    out.update(
        published=True,
        version=result.version,
        location=result.location,
        rows=int(m["counts"]["rows"]),
        counts=m["counts"],
        gates=[{"gate": g["name"], "passed": g["passed"], "value": g["value"]}
               for g in m["gates"]["results"]],
        seconds=time.perf_counter() - start,
    )  # fmt: skip
    write_json(run_dir / "export.json", out)
    return out


def run(cfg: DictConfig, overrides: Sequence[str] | None) -> dict[str, Any]:
    """From a finished run's folder (`run_dir`): its served lists, data and export settings
    (sink, gates), changed by the command line's `overrides` alone
    (`experiments.retrain.rerun_in_run`)."""
    use_threads(cfg.get("threads"))
    res = rerun_in_run(
        cfg, overrides, "export", lambda merged, data, f: export_run(merged, data, f),
        folder=".", clear=False, load=lambda f: json.loads((f / "export.json").read_text()),
    )  # fmt: skip
    _log.info("published %s rows as %s at %s", f"{res['rows']:,}", res["version"],
              res["location"])  # fmt: skip
    for g in res["gates"]:
        _log.info("  gate %s: %s", g["gate"], "passed" if g["passed"] else g["passed"])
    return res


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    log_into_run_folder(cfg.paths.output_dir, HydraConfig.get().job.name)
    run(cfg, command_overrides())


if __name__ == "__main__":
    main()
