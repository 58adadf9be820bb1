"""The evaluate stage: `python -m experiments.evaluate run_dir=outputs/pipeline/<timestamp>`.

The run's saved final models, on its test fold, nothing retrained (`conf/evaluate`):

    two-tower  <run_dir>/ncf/model: full-catalogue ranking of every learner with a test label,
               courses watched before the test cutoff excluded, truth = the test fold's labels
               (the two-tower stage's test: `ncf.module` on its test snapshot), NDCG, Recall,
               Precision, MAP, MRR and HR at every K of `evaluate.ks`, each with a percentile
               bootstrap interval over learners; the same per learner segment (the learner
               table's `evaluate.segment_column`). Its @10 figures are `ncf/metrics.json`'s test.
    GLMix      <run_dir>/glmix/model: the test fold's impression rows (`glmix.rows`), scored as
               `glmix.training` scores them: AUC with an interval over learners (learners are
               resampled, each with all its rows), log loss, mean per-learner AUC with an
               interval over learners; the figures of `glmix/metrics.json`'s test.

A model the run has not saved, or whose stage is off in the run's config (`stages.ncf`,
`stages.glmix`), is skipped with a log line (`skipped` in metrics.json). Writes
`<run_dir>/evaluation/` (each file atomically):

    metrics.json                 settings, the tables above
    ncf_per_learner.parquet      learner_id[, segment], every metric@K of every judged learner
    glmix_per_learner.parquet    learner_id, n_rows, n_pos, n_neg, auc (NaN: one class only)

The main pipeline calls `evaluate_run` after the blend stage (`stages.evaluate`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from evaluation import (
    Factors,
    RankingMetrics,
    entity_bootstrap_auc,
    evaluate_full_ranking,
    per_entity_auc,
    segment_breakdown,
)
from experiments.data import PreparedData, use_threads
from experiments.retrain import command_overrides, rerun_in_run
from experiments.run_log import log_into_run_folder
from experiments.summary import Intervals
from experiments.tables import log_table
from glmix import GLMixScorer
from glmix.rows import RowSet, row_sets, sample_weights
from glmix.training import evaluate_rows, row_designs
from ncf import NCFRecommender
from ncf.bags import csr_bags
from ncf.inputs import normalize_rows
from watchlog.io import write_json, write_parquet

__all__ = ["EVALUATION", "METRICS", "evaluate_run", "glmix_test", "ncf_test", "run"]

_log = logging.getLogger(__name__)

EVALUATION = "evaluation"  # <run_dir>/evaluation/
METRICS = ("ndcg", "recall", "precision", "map", "mrr", "hr")  # ranking metrics, per K


def ncf_test(rec: NCFRecommender, data: PreparedData, ks: list[int]) -> RankingMetrics:
    """The two-tower's full-ranking test metrics, per learner, at every K of `ks`: the saved
    recommender serves the test snapshot (history, seen, co-watch bags at the test cutoff);
    its labels are rebuilt from the log with the saved input settings. Scores are computed as
    the training module's test computes them."""
    log, fold = data.log, data.split.test
    if not (rec.learner_ids == log.learner_ids and rec.course_ids == log.course_ids):
        raise ValueError(
            "ncf/model: its learner or course ids differ from the run's event log; evaluate a "
            "run folder with the event log its models were trained on"
        )
    if rec.inputs is None:
        raise ValueError(
            "ncf/model: saved without input settings (format_version 1), so the test labels "
            "cannot be rebuilt; re-run the two-tower stage"
        )
    snap = rec.inputs.snapshot(log, fold)  # labels: watched in the test window, seen dropped
    if snap.cutoff != rec.snapshot.cutoff or (snap.seen != rec.snapshot.seen).nnz:
        raise ValueError(
            f"ncf/model: serves the snapshot at {rec.snapshot.cutoff}, not the run's test fold "
            f"(cutoff {snap.cutoff}, the same watched courses); evaluate the final model "
            "(<run_dir>/ncf/model) with the event log of its run"
        )
    # What the module's test step computes (ncf.batches.EvalBatches, NCFModule._eval_step):
    # the normalized history rows as bags, the towers, `TwoTower.score` as Factors.
    history = normalize_rows(rec.snapshot.history, rec.normalize)
    courses = rec.model.normalize(rec.course_embeddings())  # (n_courses, d)

    def queries(learners: np.ndarray) -> torch.Tensor:
        bags = csr_bags(history, learners).to(rec.device)
        emb = rec.model.learners(bags, torch.from_numpy(learners).to(rec.device))  # (c, d)
        return rec.model.normalize(emb)

    return evaluate_full_ranking(
        Factors(queries, courses), snap.labels, sorted(set(ks)), exclude=rec.snapshot.seen,
        device=rec.device,
    )  # fmt: skip


def _interval(values: np.ndarray, e: DictConfig, seed: int) -> dict[str, float]:
    return Intervals(int(e.n_boot), float(e.ci), seed).band(values)  # as the run's other figures


def _segments(data: PreparedData, column: str | None, learners: np.ndarray) -> np.ndarray | None:
    """(n,) segment of each learner index, or None (no column asked for, or none there)."""
    table = data.log.learners  # row i = learner index i (EventLog)
    if column is None:
        return None
    if column not in table.columns:
        _log.info("evaluate: the learner table has no %r column; no per-segment rows "
                  "(evaluate.segment_column)", column)  # fmt: skip
        return None
    return table[column].astype("object").fillna("(missing)").to_numpy()[learners]


def ncf_report(res: RankingMetrics, data: PreparedData, e: DictConfig, seed: int):
    """(metrics.json part, per-learner frame) of the two-tower's test."""
    ks = sorted({int(k) for k in e.ks})
    rows = [
        {"metric": f"{m}@{k}", "name": m, "k": k, **_interval(res.per_user[f"{m}@{k}"], e, seed)}
        for m in METRICS
        for k in ks
    ]
    frame = pd.DataFrame({"learner_id": data.log.learner_ids.to_ids(res.users)})
    segments = _segments(data, e.segment_column, res.users)
    by_segment: list[dict[str, Any]] = []
    if segments is not None:
        frame["segment"] = segments
        per_user = {f"{m}@{k}": res.per_user[f"{m}@{k}"] for m in METRICS for k in ks}
        table = segment_breakdown(per_user, segments, n_boot=int(e.n_boot), ci=float(e.ci),
                                  seed=seed)  # fmt: skip
        by_segment = table.to_dict("records")
    for m in METRICS:
        for k in ks:
            frame[f"{m}@{k}"] = res.per_user[f"{m}@{k}"]
    part = {
        "model": "ncf/model",
        "learners": res.n_users,
        "learners_without_labels": res.n_skipped_empty,
        "test": {r["metric"]: r["mean"] for r in rows},
        "intervals": rows,
        "coverage": {k: v for k, v in res.extra.items() if k.startswith("coverage@")},
        "by_segment": by_segment,
        "segment_column": e.segment_column if segments is not None else None,
    }
    return part, frame


def glmix_test(
    scorer: GLMixScorer, cfg: DictConfig, data: PreparedData
) -> tuple[dict[str, Any], RowSet, np.ndarray]:
    """`glmix.training.evaluate_rows` of the saved scorer on the test rows, the rows and their
    (n,) logits; rows, designs and weights are built as the GLMix stage built them."""
    g, log = cfg.glmix, data.log
    from experiments.train_glmix import row_settings

    # the test rows alone: the same rows (and sampled negatives) as in the whole set
    rows = row_sets(data.split, **row_settings(g, int(cfg.seed)), log=log, roles=("test",))["test"]
    encoded = scorer.featurizer.encode(log.learners, log.courses)
    designs = row_designs(scorer.featurizer, encoded, rows)
    weighting = OmegaConf.to_container(g.weighting) if g.get("weighting") else {"kind": "none"}
    weights, _ = sample_weights(rows, courses=log.courses, **weighting)  # as fit_on_split
    res = evaluate_rows(scorer.model, designs, rows, weights)
    return res, rows, scorer.model.predict_logit(designs, rows.keys)


def glmix_report(res: dict[str, Any], rows: RowSet, logits: np.ndarray, e: DictConfig, seed: int):
    """(metrics.json part, per-learner frame) of GLMix's test."""
    learners = rows.learner_ids
    boot = entity_bootstrap_auc(learners, rows.y, logits, n_boot=int(e.n_boot), ci=float(e.ci),
                                seed=seed)  # fmt: skip
    per = per_entity_auc(learners, rows.y, logits).table.rename(columns={"entity": "learner_id"})
    nan = float("nan")
    has_auc = per["auc"].notna().any()  # else every learner saw one class only
    per_ci = _interval(per["auc"].to_numpy(), e, seed) if has_auc else dict.fromkeys(
        ("mean", "low", "high"), nan) | {"n": 0}  # fmt: skip
    part = {
        "model": "glmix/model",
        "rows": res["rows"],
        "positives": res["positives"],
        "learners": boot.n,
        "auc": {"mean": res["auc"], "low": boot.low, "high": boot.high, "n": boot.n,
                "interval_over": "learners (each resampled learner brings all its rows)"},
        "log_loss": res["log_loss"],
        "per_learner_auc": {**per_ci, "interval_over": "learners with both classes",
                            "skipped_single_class": res["per_entity_skipped"]},
        "per_learner_auc_row_weighted": res["per_entity_auc_row_weighted"],
        "auc_watch_weighted": res.get("auc_watch_weighted"),
        "n_unknown": res["n_unknown"],
        "test": {k: res[k] for k in ("auc", "log_loss", "per_entity_auc_mean")},
    }  # fmt: skip
    return part, per


def evaluate_run(cfg: DictConfig, data: PreparedData, run_dir: Path) -> dict[str, Any]:
    """Evaluate the models saved in `run_dir` (module docstring); writes and returns the
    metrics (`<run_dir>/evaluation/metrics.json`)."""
    run_dir, e = Path(run_dir), cfg.evaluate
    out_dir = run_dir / EVALUATION
    seed = int(cfg.seed)
    _check_settings(e)
    fold = data.split.test
    out: dict[str, Any] = {
        "settings": {**OmegaConf.to_container(e, resolve=True), "seed": seed},
        "test_window": {"cutoff": str(fold.cutoff), "end": str(fold.label_end)},
        "skipped": {},
    }
    for name, loader in (("ncf", NCFRecommender.load), ("glmix", GLMixScorer.load)):
        why = _why_skipped(cfg, run_dir, name)
        if why is not None:
            _log.info("evaluate: %s skipped (%s)", name, why)
            out["skipped"][name] = why
            (out_dir / f"{name}_per_learner.parquet").unlink(missing_ok=True)  # an earlier one
            continue
        model = loader(run_dir / name / "model")
        if name == "ncf":
            part, frame = ncf_report(ncf_test(model, data, list(e.ks)), data, e, seed)
        else:
            res, rows, logits = glmix_test(model, cfg, data)
            part, frame = glmix_report(res, rows, logits, e, seed)
        write_parquet(out_dir / f"{name}_per_learner.parquet", frame)
        out[name] = part
    write_json(out_dir / "metrics.json", out)
    _log_tables(out)
    return out


def _why_skipped(cfg: DictConfig, run_dir: Path, name: str) -> str | None:
    if not (cfg.get("stages") or {}).get(name, True):
        return f"stages.{name}=false"  # a model folder there is an earlier run's
    if not (run_dir / name / "model").exists():
        record = run_dir / name / "stage.json"
        status = json.loads(record.read_text()) if record.is_file() else {}
        if status.get("status") == "skipped":  # the pipeline could not run it on this data
            return f"the {name} stage was skipped: {status.get('reason')}"
        return f"no {name}/model in the run folder"
    return None


def _check_settings(e: DictConfig) -> None:
    ks = list(e.ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"evaluate.ks: must be a non-empty list of positive ints; got {ks}")
    if not isinstance(e.n_boot, int) or e.n_boot < 1:
        raise ValueError(f"evaluate.n_boot: must be a positive int; got {e.n_boot!r}")
    if not 0.0 < float(e.ci) < 1.0:
        raise ValueError(f"evaluate.ci: must be in (0, 1); got {e.ci!r}")


def _cell(r: dict[str, Any]) -> str:
    return f"{r['mean']:.4f} [{r['low']:.4f}, {r['high']:.4f}]"


def _log_tables(out: dict[str, Any]) -> None:
    level = f"{float(out['settings']['ci']):.0%}"
    if "ncf" in out:
        rows: dict[str, dict[str, Any]] = {}
        for r in out["ncf"]["intervals"]:
            rows.setdefault(r["name"], {"metric": r["name"]})[f"@{r['k']}"] = _cell(r)
        log_table(list(rows.values()), f"two-tower test, {out['ncf']['learners']:,} learners "
                  f"(mean [{level} interval over learners])", _log)  # fmt: skip
    if "glmix" in out:
        g = out["glmix"]
        log_table(
            [{"auc": _cell(g["auc"]), "log_loss": g["log_loss"],
              "per-learner auc": _cell(g["per_learner_auc"]), "rows": g["rows"]}],
            f"GLMix test ({level} intervals over learners)", _log,
        )  # fmt: skip


def run(cfg: DictConfig, overrides: Sequence[str] | None) -> dict[str, Any]:
    """From a finished run's folder (`run_dir`): its data, models and settings, the evaluate
    settings changed by the command line's `overrides` alone
    (`experiments.retrain.rerun_in_run`)."""
    use_threads(cfg.get("threads"))
    run_dir = Path(cfg.run_dir)
    return rerun_in_run(
        cfg, overrides, "evaluate", lambda merged, data, f: _evaluate_in_run(merged, data, run_dir),
        folder=EVALUATION,
    )  # fmt: skip


def _evaluate_in_run(cfg: DictConfig, data: PreparedData, run_dir: Path) -> dict[str, Any]:
    """`evaluate_run`, then the two-tower stage's own test intervals drawn as this evaluation
    draws them (`evaluate.ci`, `evaluate.n_boot` may have changed; the pipeline does the same
    when it reuses the stage), so the run's figures keep one interval each."""
    out = evaluate_run(cfg, data, run_dir)
    if "ncf" in out and (run_dir / "ncf" / "metrics.json").is_file():
        from experiments.train_ncf import redraw_test_intervals

        redraw_test_intervals(run_dir / "ncf", Intervals.of(cfg))
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    log_into_run_folder(cfg.paths.output_dir, HydraConfig.get().job.name)
    run(cfg, command_overrides())


if __name__ == "__main__":
    main()
