"""Run one stage again inside a finished pipeline run's folder: the `run_dir=` mode of
`python -m experiments.train_ncf`, `train_glmix` (`retrain_in_run`), `blend`, `evaluate` and
`export` (`rerun_in_run`).

Where each setting comes from:

- the run: everything. Its `resolved_config.yaml` (data, split, the other model, blend,
  export, `stages`, `reuse`, ...) and its saved event log (`eventlog/`, `load_run`) are the
  starting point, so the stage sees the same data and folds as the run did;
- the command line: only the overrides it gives under the stage's own keys (`STAGE_KEYS`).
  A group choice (`ncf=mf`, `trainer=cpu`) replaces the run's whole group by the command's
  (but for `KEPT_ON_GROUP_CHOICE`: `trainer=cpu` keeps the run's `trainer.max_epochs`);
  a dotted key (`trainer.max_epochs=5`, `'~trainer.callbacks.early_stopping'`) changes that
  key alone. The command's defaults do not count: with no override the run's settings stay
  and the stage is reused. A key that conf/pipeline.yaml copies into another stage's keys
  (`export.gates.k: ${blend.k}`) takes its copy along (`cross_links`). An override of any other key is an error (data and split are
  fixed by the saved event log; the other stages have their own commands).

The merged config then goes through `experiments.stages.Stages(...).run(<stage>, ...)` in the
run folder, keyed exactly as the pipeline keys it: unchanged settings reuse the stage's
outputs; changed ones replace them whole (a killed retrain resumes). The blend models
(`blend_models/`, fitted with both models' settings on the split moved back before the blend
window) are brought up to date the same way, so the blender keeps pairing models of one
config. Last, `resolved_config.yaml` is rewritten with the merged config: `python -m
experiments.blend run_dir=...` and `experiments.export` read it. The downstream stages'
records keep the old upstream key, so the pipeline run there again recomputes them.

The blend, evaluate and export commands follow the same rule (`rerun_in_run`): the run's
settings, changed by the command line's overrides under the stage's keys alone, the stage
keyed as the pipeline keys it (the upstream stages' keys read from their records), its record
and `resolved_config.yaml` updated; `reuse=false` recomputes a stage whose key is unchanged
(after a code change).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from experiments.data import PreparedData, load_run
from experiments.paths import pin_relative_paths
from experiments.provenance import update_manifest, write_resolved_config
from experiments.ranks import is_data_parallel
from experiments.schemas import check_config
from experiments.stages import (
    RECORD,
    RECORD_PATHS,
    UPSTREAM,
    Stages,
    read_record,
    stale_stages,
    warn_stale,
)
from watchlog import DataReport

__all__ = [
    "STAGE_KEYS", "command_overrides", "merge_stage_settings", "rerun_in_run", "retrain_in_run",
]  # fmt: skip

_log = logging.getLogger(__name__)

# The top-level keys the command line may change, per stage (conf/train_*.yaml say the same).
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    # not `seed`: it also drew the run's data (the synthetic platform) and split, which the
    # saved event log fixes; a run's resolved config with another seed would regenerate both
    "ncf": ("ncf", "trainer", "outputs", "threads", "reuse"),
    "glmix": ("glmix", "outputs", "threads", "reuse"),
    "blend": ("blend", "threads", "reuse"),
    "evaluate": ("evaluate", "threads", "reuse"),
    "export": ("export", "threads", "reuse"),
}
# The run config keys a stage reads: a folder whose config lacks one is no pipeline run's.
_NEEDS: dict[str, tuple[str, ...]] = {
    "ncf": ("seed", "split", "ncf", "trainer", "outputs"),
    "glmix": ("seed", "split", "glmix", "outputs"),
    "blend": ("seed", "split", "blend"),
    "evaluate": ("seed", "split", "evaluate"),
    "export": ("export",),
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
    run_values = OmegaConf.to_container(run_cfg, resolve=False)
    merged = OmegaConf.create(run_values)
    _relink(merged, raw, run_values, allowed, paths)
    for path in sorted(set(paths), key=lambda p: p.count(".")):  # whole groups first
        found, value = _lookup(raw, path)
        if found:
            OmegaConf.update(merged, path, value, merge=False, force_add=True)
        else:  # `~key`: deleted on the command line
            parent, _, last = path.rpartition(".")
            node = OmegaConf.select(merged, parent) if parent else merged
            if isinstance(node, DictConfig) and last in node:
                del node[last]
    _follow_cross_links(merged, run_values, allowed, paths)
    _keep_run_values_over_group_choices(merged, run_values, paths)
    return merged


# Keys a group choice leaves at the run's value unless the command line names them:
# trainer.max_epochs is the run's training budget (set by the pipeline's own config, 10, or
# its command line over the trainer group's default, 60), not part of the device choice, so
# `trainer=cpu` must not quietly train six times longer.
KEPT_ON_GROUP_CHOICE = ("trainer.max_epochs",)


def _keep_run_values_over_group_choices(
    merged: DictConfig, run_values: dict, paths: Sequence[str]
) -> None:
    """In place: every `KEPT_ON_GROUP_CHOICE` key whose group the command line chose
    (`trainer=cpu`) without naming the key itself back at the run's value, said in the log."""
    for key in KEPT_ON_GROUP_CHOICE:
        group = key.split(".")[0]
        found, value = _lookup(run_values, key)
        if group not in paths or key in paths or not found:
            continue
        chosen = OmegaConf.select(merged, key)
        if chosen != value:
            _log.info("%s: the run's %s kept with the group choice (the group's default is %s; "
                      "give %s=... to change it)", key, value, chosen, key)  # fmt: skip
            OmegaConf.update(merged, key, value, merge=False)


_REFERENCE = re.compile(r"^\$\{(\.*)([A-Za-z_][\w.]*)\}$")  # ${a.b} or ${..b}: a node


def _relink(
    merged: DictConfig, raw: dict, run_values: dict, groups: Sequence[str], overridden: list
) -> None:
    """In place: the links a saved (resolved) config lost, where the command's config has
    them, so an override reaches every copy of the value: a node that is `${a.b}` (or
    relative, `${..gates}`) in the command's config becomes that reference again when the run
    held the same value at both ends (the run did not set the copy apart); a node resolved
    from the environment (`${oc.env:...}`) is read from it again when the saved value was
    redacted (a database URL's password) or null (the run's environment lacked it: a
    PostgreSQL export of a run that published Parquet)."""
    for group in groups:
        for path, value in _leaves(raw.get(group), group):
            if not isinstance(value, str) or "${" not in value:
                continue
            if any(path == p or path.startswith(p + ".") for p in overridden):
                continue  # set on the command line: taken from it already
            found, saved = _lookup(run_values, path)
            if not found:
                continue
            ref = _REFERENCE.match(value)
            if ref is not None:
                up, rest = len(ref.group(1)), ref.group(2)
                parts = path.split(".")[:-1]  # the node's container
                source = ".".join([*parts[: len(parts) - max(up - 1, 0)], rest]) if up else rest
                linked, target = _lookup(run_values, source)
                if linked and target == saved:
                    OmegaConf.update(merged, path, value, merge=False)
            elif value.startswith("${oc.env:") and (
                saved is None or (isinstance(saved, str) and "***" in saved)
            ):  # redacted, or the run's environment did not have it: read it now
                OmegaConf.update(merged, path, value, merge=False)


_PIPELINE_CONF = Path(__file__).resolve().parents[1] / "conf" / "pipeline.yaml"


def cross_links() -> list[tuple[str, str]]:
    """(copy, source) of conf/pipeline.yaml's links from one stage's key to another stage's
    (`export.gates.k: ${blend.k}`): a stage command composes its own config, which lacks them."""
    conf = OmegaConf.to_container(OmegaConf.load(_PIPELINE_CONF), resolve=False)
    links = []
    for group, tree in conf.items():
        for path, value in _leaves(tree, group) if isinstance(tree, dict) else ():
            ref = _REFERENCE.match(value) if isinstance(value, str) else None
            if ref is not None and not ref.group(1) and ref.group(2).split(".")[0] != group:
                links.append((path, ref.group(2)))
    return links


def _follow_cross_links(
    merged: DictConfig, run_values: dict, groups: Sequence[str], overridden: list
) -> None:
    """In place: a copy in another stage's keys of a key this command changed (`cross_links`:
    the blend's `blend.k` is the export gates' `k`) takes the new value, where the run held
    the same value at both ends; and so do the copies of the copy's node the saved config
    holds (`export.publish.gates` of `export.gates`). Else `experiments.export run_dir=...`
    after `experiments.blend run_dir=... blend.k=5` would gate lists of 5 against k=10."""
    for copy, source in cross_links():
        if source.split(".")[0] not in groups or not any(
            source == p or source.startswith(p + ".") for p in overridden
        ):
            continue
        found, old = _lookup(run_values, source)
        has_copy, saved = _lookup(run_values, copy)
        if not (found and has_copy and saved == old):
            continue  # the run set its copy apart: it stays
        new = OmegaConf.select(merged, source)
        parent, _, leaf = copy.rpartition(".")
        _, node = _lookup(run_values, parent)
        for path, value in _nodes(run_values.get(copy.split(".")[0]), copy.split(".")[0]):
            if path == parent or (isinstance(value, dict) and value == node):
                OmegaConf.update(merged, f"{path}.{leaf}", new, merge=False)


def _nodes(tree: Any, prefix: str):
    """(dotted path, node) of every dict node under `tree`, `tree` included."""
    if isinstance(tree, dict):
        yield prefix, tree
        for k, v in tree.items():
            yield from _nodes(v, f"{prefix}.{k}")


def _leaves(tree: Any, prefix: str):
    """(dotted path, value) of every leaf (and every interpolation string) under `tree`."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}.{k}")
    else:
        yield prefix, tree


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
    run_dir, merged, data, stages = _open_run(cfg, overrides, stage)
    trainer = merged.get("trainer") or {}
    if is_data_parallel(trainer):
        raise ValueError(
            f"run_dir mode of the {stage} stage trains in one process, but trainer "
            f"(strategy={trainer.get('strategy')}, devices={trainer.get('devices')}) asks for "
            "data-parallel processes, which keep no stage records. Choose e.g. trainer=cpu, "
            "or run the pipeline into a new folder."
        )
    metrics = stages.run(
        stage, run_dir / stage, lambda f: train_and_report(merged, data, f, resume=True)
    )
    _refresh_blend_models(merged, data, stages, run_dir)
    _record_in_manifest(run_dir, merged, stage, metrics, stages, overrides, (stage, "blend_models"))
    if stage in stages.reused:
        _log.info("%s in %s is up to date with these settings", stage, run_dir / stage)
    else:
        _log.info(
            "retrained %s in %s (key %s); %s updated: `python -m experiments.blend run_dir=%s` "
            "uses it", stage, run_dir / stage, stages.keys[stage],
            run_dir / "resolved_config.yaml", run_dir,
        )  # fmt: skip
    return metrics


def rerun_in_run(
    cfg: DictConfig,
    overrides: Sequence[str] | None,
    stage: str,
    compute: Callable[[DictConfig, PreparedData, Path], Any],
    *,
    folder: str,
    clear: bool = True,
    load: Callable[[Path], Any] | None = None,
) -> Any:
    """Run `stage` (blend, evaluate or export) again in `<cfg.run_dir>/<folder>` with the
    run's settings changed by `overrides` alone (module docstring); returns what `compute(
    merged config, data, run_dir / folder)` returns, or `load`'s reading of a reused stage."""
    run_dir, merged, data, stages = _open_run(cfg, overrides, stage)
    for upstream in UPSTREAM.get(stage, ()):  # keyed as the pipeline keyed it
        record = read_record(run_dir / RECORD_PATHS[upstream])
        if record is not None and record.get("key"):
            stages.keys[upstream] = record["key"]
            stages.wrote[upstream] = record.get("outputs")
    record = run_dir / RECORD_PATHS[stage]
    kwargs = {"record": record, "clear": clear} | ({"load": load} if load else {})
    out = stages.run(stage, run_dir / folder, lambda f: compute(merged, data, f), **kwargs)
    _record_in_manifest(run_dir, merged, stage, out, stages, overrides, (stage,))
    _log.info("%s in %s: %s (key %s)", stage, run_dir / folder,
              "reused, settings unchanged" if stage in stages.reused else "computed",
              stages.keys[stage])  # fmt: skip
    return out


def _record_in_manifest(
    run_dir: Path,
    merged: DictConfig,
    stage: str,
    result: Any,
    stages: Stages,
    overrides: Sequence[str],
    ran: tuple[str, ...],
) -> None:
    """`resolved_config.yaml` rewritten with the merged config, the run manifest brought up to
    date with what ran (`ran`: the stages this command ran or reused), and a warning per
    downstream stage now older than its inputs (`experiments.stages.stale_stages`)."""
    resolved = write_resolved_config(run_dir, merged)
    stale = stale_stages(run_dir)
    summary = {n: v for n, v in stages.summary().items() if n in ran}
    update_manifest(
        run_dir, resolved, stage, result if isinstance(result, dict) else None,
        stages=summary, overrides=list(overrides), stale=stale,
    )  # fmt: skip
    warn_stale(stale, run_dir)


def _open_run(
    cfg: DictConfig, overrides: Sequence[str] | None, stage: str
) -> tuple[Path, DictConfig, PreparedData, Stages]:
    """(run folder, the run's config changed by `overrides`, its data as the pipeline handed
    it on, `Stages` keyed with its data fingerprint): what every run_dir mode starts from."""
    check_config(cfg)  # this command's own config, before the run's data is loaded
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
    pin_relative_paths(merged)  # a relative path given here: against this directory
    check_config(merged)  # the command's `+key`s and out-of-range values, before any work
    stages = Stages(merged, run_dir)
    if "reuse" in run_cfg:  # this command's `reuse=false` is for this command, not the run's
        merged.reuse = run_cfg.reuse
    data, stages.fingerprint = _recorded_data(run_dir, data)
    return run_dir, merged, data, stages


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
