"""Retrain one model stage inside a finished pipeline run's folder: the `run_dir=` mode of
`python -m experiments.train_ncf` and `python -m experiments.train_glmix`.

Where each setting comes from:

- the run: everything. Its `resolved_config.yaml` (data, split, the other model, blend,
  export, `stages`, `reuse`, ...) and its saved event log (`eventlog/`, `load_run`) are the
  starting point, so the stage sees the same data and folds as the run did;
- the command line: only the overrides it gives under the stage's own keys (`STAGE_KEYS`).
  A group choice (`ncf=mf`, `trainer=cpu`) replaces the run's whole group by the command's;
  a dotted key (`trainer.max_epochs=5`, `'~trainer.callbacks.early_stopping'`) changes that
  key alone. The command's defaults do not count: with no override the run's settings stay
  and the stage is reused. An override of any other key is an error (data and split are
  fixed by the saved event log; the other stages have their own commands).

The merged config then goes through `experiments.stages.Stages(...).run(<stage>, ...)` in the
run folder, keyed exactly as the pipeline keys it: unchanged settings reuse the stage's
outputs; changed ones replace them whole (a killed retrain resumes). The blend models
(`blend_models/`, fitted with both models' settings on the split moved back before the blend
window) are brought up to date the same way, so the blender keeps pairing models of one
config. Last, `resolved_config.yaml` is rewritten with the merged config: `python -m
experiments.blend run_dir=...` and `experiments.export` read it. The downstream stages'
records keep the old upstream key, so the pipeline run there again recomputes them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from experiments.data import PreparedData, load_run
from experiments.provenance import write_resolved_config
from experiments.ranks import is_data_parallel
from experiments.schemas import check_config
from experiments.stages import RECORD, Stages
from watchlog import DataReport

__all__ = ["STAGE_KEYS", "command_overrides", "merge_stage_settings", "retrain_in_run"]

_log = logging.getLogger(__name__)

# The top-level keys the command line may change, per stage (conf/train_*.yaml say the same).
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "ncf": ("ncf", "trainer", "outputs", "seed", "threads"),
    "glmix": ("glmix", "outputs", "seed", "threads"),
}
# The run config keys a stage reads: a folder whose config lacks one is no pipeline run's.
_NEEDS: dict[str, tuple[str, ...]] = {
    "ncf": ("seed", "split", "ncf", "trainer", "outputs"),
    "glmix": ("seed", "split", "glmix", "outputs"),
}
_COMMAND_ONLY = ("run_dir",)  # keys of this command, not of the run


def command_overrides() -> list[str]:
    """The command line's overrides of the running Hydra job (inside `@hydra.main`)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def merge_stage_settings(
    run_cfg: DictConfig, cfg: DictConfig, overrides: Sequence[str], stage: str
) -> DictConfig:
    """The run's config with the stage keys `overrides` name taken from `cfg` (this command's
    composed config, where those overrides are applied); see the module docstring."""
    allowed = STAGE_KEYS[stage]
    paths, bad = [], []
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        path = o.key_or_group.replace("/", ".")
        top = path.split(".")[0]
        if o.is_hydra_override() or top in _COMMAND_ONLY:
            continue
        if top not in allowed or o.package is not None or o.is_sweep_override():
            bad.append(o.input_line or o.get_key_element())
        else:
            paths.append(path)
    if bad:
        raise ValueError(
            f"run_dir mode of the {stage} stage: {bad} would change what the run fixes; only "
            f"keys under {list(allowed)} come from the command line (data, split and the other "
            "stages come from the run's resolved_config.yaml and saved event log). Drop them, "
            "or run `python -m experiments.pipeline` into a new folder."
        )
    raw = OmegaConf.to_container(cfg, resolve=False)  # interpolations resolve in the merge
    merged = OmegaConf.create(OmegaConf.to_container(run_cfg, resolve=False))
    for path in sorted(set(paths), key=lambda p: p.count(".")):  # whole groups first
        found, value = _lookup(raw, path)
        if found:
            OmegaConf.update(merged, path, value, merge=False, force_add=True)
        else:  # `~key`: deleted on the command line
            parent, _, last = path.rpartition(".")
            node = OmegaConf.select(merged, parent) if parent else merged
            if isinstance(node, DictConfig) and last in node:
                del node[last]
    return merged


def _lookup(tree: Any, path: str) -> tuple[bool, Any]:
    node = tree
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def retrain_in_run(
    cfg: DictConfig,
    overrides: Sequence[str] | None,
    stage: str,
    train_and_report: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """Retrain `stage` into `<cfg.run_dir>/<stage>` with the run's settings changed by
    `overrides` (see the module docstring); returns the stage's metrics (read back when
    reused). train_and_report: the stage's `(cfg, data, out_dir, resume=...)`."""
    check_config(cfg)
    if overrides is None:
        raise ValueError(
            f"run_dir mode of the {stage} stage needs the command line's overrides: the run's "
            "settings change by them alone (`run(cfg, overrides)`; `main` passes Hydra's)"
        )
    run_dir = Path(cfg.run_dir)
    run_cfg, data = load_run(run_dir)
    missing = [k for k in _NEEDS[stage] if k not in run_cfg]
    if missing:
        raise ValueError(
            f"{run_dir / 'resolved_config.yaml'}: no {missing}; not the config of a pipeline "
            "run. Give the output folder of `python -m experiments.pipeline`."
        )
    merged = merge_stage_settings(run_cfg, cfg, overrides, stage)
    trainer = merged.get("trainer") or {}
    if is_data_parallel(trainer):
        raise ValueError(
            f"run_dir mode of the {stage} stage trains in one process, but trainer "
            f"(strategy={trainer.get('strategy')}, devices={trainer.get('devices')}) asks for "
            "data-parallel processes, which keep no stage records. Choose e.g. trainer=cpu, "
            "or run the pipeline into a new folder."
        )
    stages = Stages(merged, run_dir)
    data, stages.fingerprint = _recorded_data(run_dir, data)
    metrics = stages.run(
        stage, run_dir / stage, lambda f: train_and_report(merged, data, f, resume=True)
    )
    _refresh_blend_models(merged, data, stages, run_dir)
    write_resolved_config(run_dir, merged)
    if stage in stages.reused:
        _log.info("%s in %s is up to date with these settings", stage, run_dir / stage)
    else:
        _log.info(
            "retrained %s in %s (key %s); %s updated: `python -m experiments.blend run_dir=%s` "
            "uses it", stage, run_dir / stage, stages.keys[stage],
            run_dir / "resolved_config.yaml", run_dir,
        )  # fmt: skip
    return metrics


def _recorded_data(run_dir: Path, data: PreparedData) -> tuple[PreparedData, str]:
    """The loaded data as the pipeline's data stage hands it on (the record's column order
    and report) and the fingerprint the pipeline keys the stages with."""
    folder = run_dir / "eventlog"
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        _log.warning("%s: no data record (%s); keying the stage with the loaded log's "
                     "fingerprint", folder, RECORD)  # fmt: skip
        return data, data.log.fingerprint()
    columns = list(record.get("events_columns", []))
    log = data.log
    same_columns = sorted(columns) == sorted(log.events.columns)
    if same_columns:
        log = dataclasses.replace(log, events=log.events[columns])
    if not same_columns or log.fingerprint() != record.get("fingerprint"):
        raise ValueError(
            f"{folder}: the saved event log does not match its record ({RECORD}): it was "
            "changed after the run. Run the pipeline again (into a new folder, or with "
            "reuse=false) instead of retraining one stage."
        )
    report = DataReport(**record["report"])
    return dataclasses.replace(data, log=log, report=report), record["fingerprint"]


def _refresh_blend_models(
    cfg: DictConfig, data: PreparedData, stages: Stages, run_dir: Path
) -> None:
    """The blend models again when their key changed (as the pipeline's blend stage does)."""
    if not (cfg.get("stages") and cfg.stages.get("blend")) or data.split.blend is None:
        return
    from experiments.blend import BLEND_MODELS
    from experiments.pipeline import fit_blend_models

    stages.run(
        "blend_models", run_dir / BLEND_MODELS,
        lambda f: fit_blend_models(cfg, data, f, resume=True), load=lambda f: None,
    )  # fmt: skip
