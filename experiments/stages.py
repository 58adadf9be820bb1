"""Reuse and resume of the main pipeline's stages (`experiments.pipeline`).

Each stage has a key: a hash of the resolved config keys it depends on (`DEPENDS`), the data
fingerprint (`EventLog.fingerprint`) and the keys of the stages it reads (`UPSTREAM`). Its
record (`stage.json` in its folder) is written when it starts (`status: running`) and,
atomically, once its outputs are all written (`status: done`):

- done, same key: the stage is not run; its outputs are read back (log line
  `reused <stage> (key ...)`);
- skipped (the data could not run it, e.g. GLMix without impressions): run again, which
  raises the same reason at once;
- running, same key: a run was killed in it; the stage runs again in the same folder and its
  model fits resume from their checkpoints (`ncf.training`, `glmix.state`);
- another key (or none): the folder's old outputs are moved aside first (one rename, to
  `.<folder>.previous` beside it), so a folder never mixes the outputs of two configs. They
  are deleted once the stage is done; a recompute that fails puts them back (swapped in one
  step), so a failed rerun never loses the last finished outputs, and the stage's record
  still names their key. A run killed meanwhile leaves them aside: the same command resumes
  and then deletes them; a run that fails when resuming puts them back.

The model stages' `outputs` (which files they write: model, embeddings, plots, test scores)
are not in their keys: they choose what is written, not what is computed. Their record keeps
the `outputs` they wrote; a done stage is reused when those cover what is asked for now (the
same, or fewer: `outputs.plots=false` after a run with plots reuses the model and leaves its
plots in place), and recomputed when more is asked for (files the run never wrote). The
evaluation judges the saved models, so its key also holds whether they were saved
(`READS_OUTPUTS`: the `outputs.model` the model stages' records say they wrote with): a run
with `outputs.model=true` after one without evaluates the models it now saves.

`reuse: false` in the config recomputes every stage. Code changes are not part of the key
(a change to the blender should not retrain the models), so after changing the code run with
`reuse=false` (or into a new output folder) when the change matters. The record keeps the code
version that computed the stage (`experiments.provenance.code_version`); a stage reused from
another code version is logged as a warning, and the run manifest's `stages` names, per stage,
the code version that computed what this run used.

Data-parallel runs (`trainer=ddp*`, `distributed=True`) neither reuse nor resume: every rank
must take the same path through the collective fits, and records written by one rank while
another reads them would let them diverge. There every stage is computed, only rank 0
(`writer`) writes the event log, and no record is written.

The data stage is reused from the saved event log (`save_data: true`): loaded (validated
again), its column order restored, its fingerprint checked against the record, split again;
the data report and, for the synthetic platform, the ground truth come from the record's
folder. Without a saved log the data stage is always recomputed (it is then cheap or the
source is a file anyway).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments.data import TRUTH, PreparedData, load_truth, prepare_data
from experiments.provenance import code_version
from watchlog import DataReport, EventLog
from watchlog.io import atomic_path, exchange_paths, write_json

__all__ = [
    "DEPENDS", "OUTPUTS", "READS_OUTPUTS", "RECORD", "RECORD_PATHS", "Stages", "UPSTREAM",
    "outputs_cover",
    "read_record", "stale_message", "stale_stages", "warn_stale",
]  # fmt: skip

log = logging.getLogger(__name__)

RECORD = "stage.json"

# The resolved config keys each stage's outputs depend on (dotted paths).
DEPENDS: dict[str, tuple[str, ...]] = {
    "data": ("data", "split", "seed"),
    "ncf": ("seed", "threads", "split", "ncf", "trainer"),
    "glmix": ("seed", "threads", "split", "glmix"),
    "blend_models": ("seed", "threads", "split", "ncf", "trainer", "glmix", "stages.glmix"),
    "blend": ("seed", "threads", "blend"),
    "evaluate": ("seed", "evaluate"),
    "export": ("export",),
}
# The config key of each stage that chooses which files it writes (module docstring).
# The `outputs.*` settings each model stage reads (which files it writes, not what it
# computes): only these decide whether its run wrote what is asked now, so switching on a
# two-tower output (embeddings, plots) does not recompute GLMix, which writes none of them.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "ncf": ("model", "embeddings", "plots", "plot_method", "neighbour_course"),
    "glmix": ("model", "test_scores"),
}
# The `outputs.*` settings of its upstream model stages a stage's results depend on, beyond
# their keys: the evaluation judges the saved models (`outputs.model`) and skips a model its
# stage did not save, so a model saved since is judged again. The settings the upstream
# stage's outputs were written with (its record's), not the ones asked for now.
READS_OUTPUTS: dict[str, tuple[str, ...]] = {"evaluate": ("model",)}
# The stages whose outputs a stage reads: their keys are part of its key.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "blend": ("ncf", "glmix", "blend_models"),
    "evaluate": ("ncf", "glmix"),
    "export": ("blend",),
}


# Where each stage's record lives in a run folder (as the pipeline writes it).
RECORD_PATHS: dict[str, str] = {
    "ncf": "ncf/stage.json", "glmix": "glmix/stage.json",
    "blend_models": "blend_models/stage.json", "blend": "blend/stage.json",
    "evaluate": "evaluation/stage.json", "export": "export_stage.json",
}  # fmt: skip


def _select(resolved: dict[str, Any], dotted: str) -> Any:
    node: Any = resolved
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def read_record(path: Path) -> dict[str, Any] | None:
    """A stage record (`stage.json`), or None when absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stale_stages(run_dir: str | os.PathLike) -> dict[str, list[str]]:
    """{stage: [its upstream stages computed again since]} of a run folder: a done stage
    whose record names another key of an upstream stage than that stage's record holds now
    (the blend and evaluation after `python -m experiments.train_ncf run_dir=...`), or other
    `READS_OUTPUTS` settings (the evaluation after a model was saved since). Its
    outputs were computed from the upstream's earlier outputs; running its command with the
    same run_dir brings it up to date."""
    run_dir = Path(run_dir)
    records = {n: read_record(run_dir / p) for n, p in RECORD_PATHS.items()}
    stale: dict[str, list[str]] = {}
    for name, upstream in UPSTREAM.items():
        record = records.get(name)
        if not record or record.get("status") != "done":
            continue
        used = record.get("upstream") or {}
        changed = [
            u for u in upstream
            if (used.get(u) and records.get(u) and records[u].get("key") != used[u])
            or _wrote_otherwise(record, u, records.get(u))
            or u in stale  # computed from a stage that is itself stale (UPSTREAM's order)
        ]  # fmt: skip
        if changed:
            stale[name] = changed
    return stale


def _wrote_otherwise(record: dict[str, Any], upstream: str, now: dict[str, Any] | None) -> bool:
    """Whether upstream stage `upstream` (record `now`) was written since with other
    `READS_OUTPUTS` settings than `record`'s stage was computed from (its `upstream_outputs`;
    False for records without them)."""
    used = (record.get("upstream_outputs") or {}).get(upstream)
    if used is None or not now:
        return False
    wrote = now.get("outputs") or {}
    return any(wrote.get(o) != v for o, v in used.items())


# The command that brings each downstream stage up to date in a run folder.
COMMANDS = {"blend": "experiments.blend", "evaluate": "experiments.evaluate",
            "export": "experiments.export"}  # fmt: skip


def stale_message(name: str, changed: list[str], run_dir: str | os.PathLike) -> str:
    """What a stale stage (`stale_stages`) tells a person: why, and the command that
    recomputes it (the log's warning and the report's note)."""
    return (
        f"{name} in {run_dir} was computed from earlier outputs of {', '.join(changed)} "
        f"(retrained since); `python -m {COMMANDS[name]} run_dir={run_dir}` brings it up to date"
    )


def warn_stale(stale: dict[str, list[str]], run_dir: str | os.PathLike) -> None:
    """A warning per stage of `stale_stages(run_dir)`."""
    for name, changed in stale.items():
        log.warning("%s", stale_message(name, changed, run_dir))


def outputs_cover(written: Any, asked: Any) -> bool:
    """Whether a stage that wrote with `written` (its record's `outputs`) has what `asked`
    asks for: every output switched on now was on then, every other setting (e.g.
    `plot_method`) is the same. A record without `outputs` covers only nothing asked."""
    if not asked:
        return True
    if not isinstance(written, dict):
        return False
    for name, value in asked.items():
        if isinstance(value, bool):
            if value and written.get(name) is not True:
                return False
        elif name not in written or written[name] != value:
            return False
    return True


def _clear(folder: Path) -> None:
    """Remove `folder`: renamed aside in one step (so no reader sees it half deleted), then
    deleted."""
    if folder.exists():
        aside = folder.with_name(f".{folder.name}.stale-{os.getpid()}")
        os.replace(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)


def _kept_path(folder: Path) -> Path:
    """Where a stage folder's last good outputs wait while the stage is computed again."""
    return folder.with_name(f".{folder.name}.previous")


def _is_done(folder: Path) -> bool:
    record = read_record(folder / RECORD)
    return record is not None and record.get("status") == "done"


def _keep_previous(folder: Path) -> Path | None:
    """Before a stage is computed again with another key: its folder's finished outputs moved
    aside whole (`_kept_path`, one rename), so a failed recompute can put them back. A folder
    a killed or failed run left (not done) is removed, keeping the finished outputs an earlier
    recompute set aside, if any. Returns where the kept outputs are (None: nothing kept)."""
    kept = _kept_path(folder)
    if _is_done(folder):
        _clear(kept)
        os.replace(folder, kept)
        return kept
    _clear(folder)
    if _is_done(kept):
        return kept
    _clear(kept)
    return None


def _restore_previous(folder: Path, kept: Path) -> None:
    """Put a stage's kept outputs back in `folder` in place of a failed recompute's: the two
    swapped in one step where the system can (`exchange_paths`), then the failed ones
    removed."""
    if folder.exists() and exchange_paths(kept, folder):
        _clear(kept)  # the failed recompute's files now live at the kept name
        return
    _clear(folder)
    os.replace(kept, folder)


def _after_failure(
    name: str, err: Exception, folder: Path, record: Path, entry: dict, kept: Path | None
) -> None:
    """The record and folder of a stage whose compute raised `err`: skipped (the data cannot
    run it); else the last finished outputs put back where there are any (`kept`); else
    failed, with the error, resumable like a killed run."""
    if getattr(err, "skips_stage", False):  # the data cannot run it: not a killed run
        write_json(record, {**entry, "status": "skipped", "reason": str(err)})
        if kept is not None:  # outputs this data cannot have: not to be put back
            _clear(kept)
    elif kept is not None:  # the last good outputs back, as if this run had not been
        _restore_previous(folder, kept)
        log.warning("%s failed (key %s); the outputs of its last finished run are back in %s",
                    name, entry["key"], folder)  # fmt: skip
    else:
        write_json(record, {**entry, "status": "failed", "error": f"{type(err).__name__}: {err}"})


def _metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text())


def _after_failure(
    name: str, err: Exception, folder: Path, record: Path, entry: dict, kept: Path | None
) -> None:
    """The record and folder of a stage whose compute raised `err`: skipped (the data cannot
    run it); else the last finished outputs put back where there are any (`kept`); else
    failed, with the error, resumable like a killed run."""
    if getattr(err, "skips_stage", False):  # the data cannot run it: not a killed run
        write_json(record, {**entry, "status": "skipped", "reason": str(err)})
        if kept is not None:  # outputs this data cannot have: not to be put back
            _clear(kept)
    elif kept is not None:  # the last good outputs back, as if this run had not been
        _restore_previous(folder, kept)
        log.warning("%s failed (key %s); the outputs of its last finished run are back in %s",
                    name, entry["key"], folder)  # fmt: skip
    else:
        write_json(record, {**entry, "status": "failed", "error": f"{type(err).__name__}: {err}"})


def _metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text())


class Stages:
    """The stage records of one pipeline run folder (see the module docstring)."""

    def __init__(
        self,
        cfg: DictConfig,
        out_dir: str | os.PathLike,
        *,
        distributed: bool = False,
        writer: bool = True,
    ):
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.distributed, self.writer = distributed, writer
        self.reuse = bool(cfg.get("reuse", True)) and not distributed
        self.resolved = OmegaConf.to_container(cfg, resolve=True)
        self.keys: dict[str, str] = {}
        self.reused: set[str] = set()
        self.fingerprint: str | None = None
        self.code_version = code_version()
        self.computed_by: dict[str, str | None] = {}  # stage -> code version of its outputs
        self.wrote: dict[
            str, Any
        ] = {}  # model stage -> the `outputs` its outputs were written with

    def key(self, name: str) -> str:
        """The stage's key: its config keys, the data fingerprint, its upstream keys."""
        blob = {
            "stage": name,
            "config": {k: _select(self.resolved, k) for k in DEPENDS[name]},
            "data": None if name == "data" else self.fingerprint,
            "upstream": {u: self.keys.get(u) for u in UPSTREAM.get(name, ())},
        }
        if name in READS_OUTPUTS:
            blob["upstream_outputs"] = self._upstream_outputs(name)
        text = json.dumps(blob, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _upstream_outputs(self, name: str) -> dict[str, dict[str, Any]]:
        """{upstream model stage: {setting: value}} of the `READS_OUTPUTS` of stage `name`, as
        the upstream's outputs were written (`wrote`; None where unknown)."""
        return {
            u: {o: (self.wrote.get(u) or {}).get(o) for o in READS_OUTPUTS[name]}
            for u in UPSTREAM.get(name, ()) if u in OUTPUTS
        }  # fmt: skip

    def summary(self) -> dict[str, dict[str, Any]]:
        """{stage: {key, reused, code_version}} of the stages run so far (for the run
        manifest); code_version: the one that computed the stage's outputs (None: a record
        written before records kept it)."""
        return {
            n: {"key": k, "reused": n in self.reused,
                "code_version": self.computed_by.get(n, self.code_version)}
            for n, k in self.keys.items()
        }  # fmt: skip

    def _outputs(self, name: str) -> dict[str, Any] | None:
        """The `outputs.*` settings stage `name` reads (OUTPUTS), None for other stages."""
        if name not in OUTPUTS:
            return None
        asked = _select(self.resolved, "outputs")
        asked = asked if isinstance(asked, dict) else {}
        return {k: asked[k] for k in OUTPUTS[name] if k in asked}

    def _reused(self, name: str, key: str, record: dict[str, Any]) -> None:
        """Note a stage read back from `record`; warn when another code computed it."""
        self.reused.add(name)
        by = self.computed_by[name] = record.get("code_version")
        if by != self.code_version:
            log.warning(
                "reused %s (key %s) computed by code %s; this run's code is %s (code is not "
                "part of the key: run with reuse=false if the change matters)",
                name, key, by or "unrecorded", self.code_version,
            )  # fmt: skip
        else:
            log.info("reused %s (key %s)", name, key)

    def _make_room(
        self, name: str, key: str, folder: Path, same_key: dict[str, Any] | None, clear: bool
    ) -> Path | None:
        """Before `name` is computed in `folder`: a run of this key that was killed or failed
        is resumed there (its checkpoints kept); else, with `clear`, the folder's earlier
        outputs are set aside (`_keep_previous`). Returns where the last finished outputs
        wait (None: none)."""
        status = (same_key or {}).get("status")
        if self.reuse and status in ("running", "failed"):
            log.info("resuming %s (key %s) from what a %s run left in %s", name, key,
                     "killed" if status == "running" else "failed", folder)  # fmt: skip
            return _kept_path(folder) if clear and _is_done(_kept_path(folder)) else None
        return _keep_previous(folder) if clear else None

    # ---- the data stage ----------------------------------------------------------------------
    def data(self) -> PreparedData:
        """The saved data when its record matches this config (see the module docstring),
        else `prepare_data`."""
        key = self.keys["data"] = self.key("data")
        folder = self.out_dir / "eventlog"
        record = read_record(folder / RECORD)
        if self.reuse and record is not None and record.get("key") == key:
            data = self._load_data(folder, record)
            if data is not None:
                self._reused("data", key, record)
                self.fingerprint = record["fingerprint"]
                return data
        data = prepare_data(self.cfg.data, self.cfg.split)
        self.fingerprint = data.log.fingerprint()
        return data

    def save_data(self, data: PreparedData) -> None:
        """The event log (`EventLog.save`, a whole-folder swap), the truth, then the record."""
        folder = self.out_dir / "eventlog"
        if not self.writer:
            return
        data.log.save(folder)
        if self.distributed:
            return  # no record: a distributed run is never reused
        if data.truth is not None:
            arrays = {
                f.name: getattr(data.truth, f.name)
                for f in dataclasses.fields(data.truth)
                if isinstance(getattr(data.truth, f.name), np.ndarray)
            }
            with atomic_path(folder / TRUTH) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        write_json(
            folder / RECORD,
            {
                "stage": "data", "key": self.keys["data"], "status": "done",
                "fingerprint": self.fingerprint, "code_version": self.code_version,
                "events_columns": list(data.log.events.columns),
                "report": data.report.to_dict(),
                "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )  # fmt: skip

    def _load_data(self, folder: Path, record: dict[str, Any]) -> PreparedData | None:
        start = time.perf_counter()
        loaded = EventLog.load(folder)
        columns = record["events_columns"]
        if sorted(columns) != sorted(loaded.events.columns):
            log.warning("saved event log %s: columns differ from its record; recomputing", folder)
            return None
        loaded = dataclasses.replace(loaded, events=loaded.events[columns])
        if loaded.fingerprint() != record["fingerprint"]:
            log.warning("saved event log %s: fingerprint differs from its record; recomputing",
                        folder)  # fmt: skip
            return None
        split_cfg = self.cfg.split
        split = instantiate(split_cfg.fn)(loaded, loaded.select(split_cfg.events),
                                          report=DataReport())  # fmt: skip
        report = DataReport(**record["report"])
        return PreparedData(
            loaded, split, report, load_truth(folder), {"load_saved": time.perf_counter() - start}
        )

    # ---- model and later stages --------------------------------------------------------------
    def run(
        self,
        name: str,
        folder: Path,
        compute: Callable[[Path], Any],
        *,
        load: Callable[[Path], Any] = _metrics,
        record: Path | None = None,
        clear: bool = True,
    ) -> Any:
        """`compute(folder)` unless the stage's record says it is done with this key (then
        `load(folder)`). record: where the record lives (default `folder/stage.json`);
        clear: set the folder's earlier outputs aside first, deleted once this run is done and
        put back if it fails (False where the folder is shared, e.g. the run folder itself)."""
        key = self.keys[name] = self.key(name)
        if self.distributed:  # computed on every rank, no record (module docstring)
            self.wrote[name] = self._outputs(name)
            return compute(folder)
        record = folder / RECORD if record is None else record
        previous = read_record(record)
        same = previous is not None and previous.get("key") == key
        outputs = self._outputs(name)
        done = same and previous.get("status") == "done"
        if self.reuse and done and outputs_cover(previous.get("outputs"), outputs):
            self._reused(name, key, previous)
            self.wrote[name] = previous.get("outputs")
            return load(folder)
        self.wrote[name] = outputs
        if self.reuse and done:
            log.info("recomputing %s (key %s): outputs asks for files its run did not write "
                     "(then %s, now %s)", name, key, previous.get("outputs"), outputs)  # fmt: skip
        kept = self._make_room(name, key, folder, previous if same else None, clear)
        entry = {"stage": name, "key": key, "data_fingerprint": self.fingerprint,
                 "upstream": {u: self.keys.get(u) for u in UPSTREAM.get(name, ())},
                 "code_version": self.code_version}  # fmt: skip
        if name in OUTPUTS:
            entry["outputs"] = outputs
        if name in READS_OUTPUTS:
            entry["upstream_outputs"] = self._upstream_outputs(name)
        write_json(record, {**entry, "status": "running"})
        try:
            result = compute(folder)
        except Exception as err:
            _after_failure(name, err, folder, record, entry, kept)
            raise
        write_json(
            record,
            {**entry, "status": "done",
             "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
        )  # fmt: skip
        if clear:
            _clear(_kept_path(folder))  # the outputs this run replaced
        return result
