"""The blend stage: `python -m experiments.blend run_dir=outputs/pipeline/<timestamp>`.

Wiring only (the logic is `blend.run_study`): reads a pipeline run's folder (its resolved
config, the cleaned event log, the final models `ncf/model` + `glmix/model`, and the models
the blender is fitted with, `blend_models/{ncf,glmix}/model`), builds the scored candidates of
each window (`blend.workflow` says which model serves which window), runs the study and writes
`<run_dir>/blend/`:

    metrics.json          validation table of every blender variant, the chosen ones, test
                          figures of every system, tournaments, replay tuning, served sources
    test_per_learner.parquet  every system's per-learner test metrics (paired comparisons,
                          per-segment breakdowns)
    test_curves.parquet   every system's mean test NDCG@k and Recall@k at k = 1..curve_k (the
                          report's metric-vs-K curves)
    ranked_lists.parquet  the served top-k of every learner in the learner table, at the end of
                          the log (learner_id, rank, course_id, score, source), written in
                          chunks of learners; what `experiments.export` publishes
    run_manifest.json     resolved config, data fingerprint, code version, timings

The main pipeline calls `blend_and_report` with the data and models it has in memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from blend import CandidateBuilder, LabelledPoint, PositionCurve, make_variants, window_truth
from blend.candidates import seen_in
from blend.lists import served_lists
from blend.selection import label_draws
from blend.workflow import Points, learner_routes, run_study
from experiments.data import PreparedData, use_threads
from experiments.provenance import write_manifest
from experiments.retrain import command_overrides, rerun_in_run
from experiments.run_log import log_into_run_folder
from experiments.tables import log_table
from experiments.train_ncf import MODEL_BEFORE_REFIT
from glmix import GLMixScorer
from ncf import NCFRecommender
from watchlog import EventLog
from watchlog.io import atomic_path, write_json, write_parquet
from watchlog.splits import Fold, LeakageError

__all__ = [
    "BLEND_MODELS", "Models", "blend_and_report", "fit_fold", "oracle_row", "run", "serving_fold",
]  # fmt: skip

_log = logging.getLogger(__name__)

BLEND_MODELS = "blend_models"  # <run_dir>/blend_models/{ncf,glmix}/model: trained before the
# blend window (splits with one)


@dataclass
class Models:
    ncf: NCFRecommender
    glmix: GLMixScorer | None

    @classmethod
    def load(cls, folder: Path, name: str = "model") -> Models:
        """`folder/ncf/<name>` and, when present, `folder/glmix/<name>`."""
        if not (folder / "ncf" / name).exists():
            raise FileNotFoundError(
                f"{folder}/ncf/{name}: no two-tower here; the blend needs the pipeline's model "
                "stages (stages.ncf=true, outputs.model=true)"
            )
        rec = NCFRecommender.load(folder / "ncf" / name)
        glmix = folder / "glmix" / name
        return cls(rec, GLMixScorer.load(glmix) if glmix.exists() else None)

    @classmethod
    def load_early(cls, run_dir: Path) -> Models:
        """The models the blender is fitted with: `blend_models/` (a split with a blend
        window), else, model by model, the one chosen on validation (`model_before_refit`:
        the two-tower serving the validation snapshot, GLMix before its refit), else its final
        one (a GLMix without a refit never saw the validation labels; a two-tower's final
        model serves the test snapshot and `make_points` refuses it). Each model on its own:
        either may be refitted while the other is not, and a refitted model scoring the
        window the blender is fitted on would leak those labels into the blender."""
        if (run_dir / BLEND_MODELS).exists():
            return cls.load(run_dir / BLEND_MODELS)
        ncf, glmix = (_before_refit(run_dir / stage) for stage in ("ncf", "glmix"))
        if ncf is None:
            cls.load(run_dir)  # raises: no two-tower here
        return cls(NCFRecommender.load(ncf), GLMixScorer.load(glmix) if glmix else None)

    def serving(self) -> Models:
        """The same models, serving learners the two-tower has no row for from an empty
        history (the fallback chain then replaces their lists) instead of raising."""
        self.ncf.cold_start = "empty_history"
        return self


def _before_refit(stage_dir: Path) -> Path | None:
    """A stage's model as chosen before its refit, else its only model, else None."""
    for name in (MODEL_BEFORE_REFIT, "model"):
        if (stage_dir / name).exists():
            return stage_dir / name
    return None


def labelled_point(builder, log: EventLog, fold: Fold, models: Models, gain: str) -> LabelledPoint:
    """Scored candidates of every learner with a label in the fold's window."""
    if models.ncf.retrieval_method != "exact":  # metrics never depend on an approximation
        raise RuntimeError(
            f"blend: the judged candidates must be retrieved exactly; the two-tower serves "
            f"with {models.ncf.retrieval_method!r} (only the served lists may: "
            "blend.serve_retrieval)"
        )
    seen = seen_in(log, fold.inputs)
    truth = window_truth(log, fold, seen, gain=gain)
    learners = log.learner_ids.index[np.flatnonzero(np.diff(truth.indptr) > 0)]
    try:  # the builder refuses a two-tower serving another snapshot than the fold's inputs
        table = builder.build(
            learners, log=log, fold=fold, retriever=models.ncf, scorer=models.glmix
        )
    except LeakageError as err:
        raise LeakageError(
            f"blend: {err}. A run folder written before the two-tower saved "
            f"ncf/{MODEL_BEFORE_REFIT} with ncf.refit=false lacks the validation model: "
            "retrain it (`python -m experiments.train_ncf run_dir=<run> reuse=false`)"
        ) from None
    return LabelledPoint.from_table(table, log, truth)


def make_points(
    b: DictConfig, data: PreparedData, final: Models, early: Models, *, seed: int
) -> Points:
    """Which models serve which window (see blend.workflow)."""
    builder: CandidateBuilder = instantiate(b.candidates, _convert_="all")
    log, split = data.log, data.split
    test = labelled_point(builder, log, split.test, final, b.gain)
    if split.blend is not None:
        if int(b.holdout_draws) != 1:
            _log.warning(
                "blend.holdout_draws=%s has no effect: the split has a blend window, "
                "so settings are judged on the later validation window",
                b.holdout_draws,
            )
        fit = labelled_point(builder, log, split.blend, early, b.gain)
        later = Models(early.ncf.at(log, split.valid.cutoff), early.glmix).serving()
        valid = labelled_point(builder, log, split.valid, later, b.gain)
        return Points(fit, valid, test)
    whole = labelled_point(builder, log, split.valid, early, b.gain)
    draws = label_draws(whole, float(b.holdout_fraction), int(b.holdout_draws), seed=seed)
    (fit, valid), *more = draws
    return Points(fit, valid, test, refit_on=whole, more_draws=more)


def fit_fold(data: PreparedData) -> Fold:
    """The fold whose labels the blenders are fitted on: the blend window, else validation.
    What the blend learns from the log beside those labels (the click-by-position curve of
    replay tuning) comes from this fold's inputs: strictly before its labels."""
    return data.split.blend if data.split.blend is not None else data.split.valid


def serving_fold(data: PreparedData) -> Fold:
    """Everything known at the end of the log: the exported lists' inputs."""
    events = data.log.events
    end = events["ts"].iloc[-1].floor("D") + pd.Timedelta(days=1)
    return Fold("serve", "temporal", events, events.iloc[:0], end, end)


def write_served_lists(
    b: DictConfig, data: PreparedData, final: Models, blender, path: Path
) -> dict[str, Any]:
    """The served lists of every learner at the end of the log, chunk by chunk into one
    Parquet file (atomic): memory is bounded by the chunk."""
    builder: CandidateBuilder = instantiate(b.candidates, _convert_="all")
    fold = serving_fold(data)
    now = Models(final.ncf.at(data.log, fold.cutoff), final.glmix).serving()
    now.ncf.retrieval = instantiate(b.serve_retrieval)  # exact unless configured
    counts: dict[str, int] = {}
    n_rows = unscorable = 0
    listed = np.zeros(data.log.n_learners, dtype=bool)  # learners of the table given a list
    schema = None
    with atomic_path(path) as tmp:
        writer = None
        for chunk in builder.chunks(
            data.log.learner_ids.index, log=data.log, fold=fold, retriever=now.ncf,
            scorer=now.glmix, learners_per_chunk=int(b.learners_per_chunk),
        ):  # fmt: skip
            # the same courses in every chunk: left out of the fallback lists, unscorable
            unscorable = max(unscorable, int(chunk.attrs.get("fallback_courses_unscorable", 0)))
            chunk = chunk.assign(blend_score=blender.score(chunk))
            lists = served_lists(chunk, "blend_score", int(b.k), route=learner_routes(chunk))
            table = pa.Table.from_pandas(lists, preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table.cast(schema))
            n_rows += len(lists)
            listed[data.log.learner_ids.to_index(lists["learner_id"])] = True
            for s, n in lists.loc[lists["rank"] == 1, "source"].value_counts().items():
                counts[str(s)] = counts.get(str(s), 0) + int(n)
        if writer is not None:
            writer.close()
    unlisted = data.log.learner_ids.index[~listed]  # no candidate at all: counted, named
    if len(unlisted):
        _log.warning("served lists: %s learners of the table have none (no candidates), e.g. %s",
                     f"{len(unlisted):,}", unlisted[:5].tolist())  # fmt: skip
    return {
        "path": str(path),
        "rows": n_rows,
        "learners": int(listed.sum()),
        "learners_in_table": data.log.n_learners,
        "learners_without_list": {"count": len(unlisted), "examples": unlisted[:5].tolist()},
        "cutoff": str(fold.cutoff),
        "learners_by_first_source": counts,
        # popular courses newer than the two-tower: not in any fallback list (warned per chunk)
        "fallback_courses_unscorable": unscorable,
    }


def blend_and_report(
    cfg: DictConfig, data: PreparedData, final: Models, early: Models, out_dir: Path
) -> dict[str, Any]:
    """Points -> study -> served lists of every learner -> metrics.json and the manifest."""
    b, seed = cfg.blend, int(cfg.seed)
    start = time.perf_counter()
    final, early = final.serving(), early.serving()
    points = make_points(b, data, final, early, seed=seed)
    timings = {"candidates": time.perf_counter() - start}
    present = [f for f in b.features if f in points.fit.table.columns]
    variants = make_variants(
        context=present,
        normalizations=list(b.normalizations),
        kinds=[k for k in b.variants.kinds if k != "rrf" or _has(points, b.variants.rrf_columns)],
        fixed_weights={k: v for k, v in b.variants.fixed_weights.items()
                       if k == "ncf" or k in points.fit.table.columns},
        rrf_columns=list(b.variants.rrf_columns),
        rrf_k=float(b.variants.rrf_k),
        logistic=OmegaConf.to_container(b.variants.logistic),
        rank=OmegaConf.to_container(b.variants.rank),
        personalized=OmegaConf.to_container(b.variants.personalized),
    )  # fmt: skip
    oracle = None
    if data.truth is not None:  # the synthetic platform: rank by the true affinity (ceiling)
        t = points.test.table
        oracle = data.truth.affinity(
            data.log.learner_ids.to_index(t["learner_id"]), data.log.course_ids.to_index(t["course_id"])
        )  # fmt: skip
    k = int(b.k)
    catalogue = catalogue_oracle(data, points.test, k) if data.truth is not None else None
    t = time.perf_counter()
    replay = OmegaConf.to_container(b.replay)
    report = run_study(
        points, variants, serve=str(b.serve),
        replay_features=["ncf", *present] if replay.pop("enabled") else None,
        curve=PositionCurve.from_impressions(fit_fold(data).inputs), replay=replay,
        oracle=oracle, k=k, n_boot=int(b.n_boot), seed=seed,
        curve_k=int(b.get("curve_k") or 0),
    )  # fmt: skip
    timings["study"] = time.perf_counter() - t
    if catalogue is not None:  # the ceiling without the candidate set's limits
        report.test_rows.append(oracle_row(catalogue, k))
        report.per_user["oracle (whole catalogue)"] = catalogue
    t = time.perf_counter()
    lists = write_served_lists(b, data, final, report.serving, out_dir / "ranked_lists.parquet")
    timings["served_lists"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    absent = [f for f in b.features if f not in present]
    metrics = {
        **report.summary(),
        "k": int(b.k),  # the served length: every test NDCG / tournament is at it
        "features": present,
        "features_absent": absent,
        "ranked_lists": lists,
        "windows": {n: getattr(data.split, n).cutoff for n in ("blend", "valid", "test")
                    if getattr(data.split, n, None) is not None},
    }  # fmt: skip
    write_json(out_dir / "metrics.json", {**metrics, "timings": timings})
    write_parquet(out_dir / "test_per_learner.parquet", report.per_learner_frame(data.log))
    if report.curves is not None:
        write_parquet(out_dir / "test_curves.parquet", report.curves)
    write_manifest(
        out_dir, cfg, data_fingerprint=data.log.fingerprint(), metrics=metrics, timings=timings
    )
    _print_summary(report, lists, absent, timings, out_dir)
    return {**metrics, "timings": timings}


def catalogue_oracle(data: PreparedData, test: LabelledPoint, k: int):
    """The synthetic platform's true affinity ranking the whole catalogue (courses watched
    before the cutoff excluded) for the learners judged on test: the ceiling of any list."""
    from evaluation import evaluate_full_ranking

    learners = data.log.learner_ids.to_index(pd.unique(test.table["learner_id"]))
    exclude = seen_in(data.log, data.split.test.inputs)
    res = evaluate_full_ranking(
        lambda u: data.truth.affinity_matrix(u), test.truth, ks=(k,),
        users=np.sort(learners).astype(np.int64), exclude=exclude,
    )  # fmt: skip
    return res


def oracle_row(catalogue, k: int) -> dict[str, Any]:
    """The whole-catalogue oracle's row of the test table (its metrics at the lists' k)."""
    summary = catalogue.summary()
    return {"system": "oracle (whole catalogue)", f"ndcg@{k}": summary[f"ndcg@{k}"],
            f"recall@{k}": summary[f"recall@{k}"], "auc": float("nan"),
            "learners": catalogue.n_users}  # fmt: skip


def _has(points: Points, columns) -> bool:
    return all(c in points.fit.table.columns for c in columns)


def _print_summary(report, lists, absent, timings, out_dir: Path) -> None:
    log_table(report.choice.table()[:10], "Blenders on validation (best 10)", _log)
    if (m := report.serve_margin) is not None:
        diff = next(v for key, v in m.items() if key.endswith("_diff"))
        _log.info("serving %s: %+.4f on validation against the next kind (%s), ahead on %d of "
                  "%d draws", m["kind"], diff, m["runner_up"], m["draws_ahead"], m["draws"])  # fmt: skip
    log_table(report.test_rows, "Test: every system on the same candidates", _log)
    rows = [{"duel": k, "diff": v.mean_diff, "low": v.low, "high": v.high,
             "win_rate": v.win_rate} for k, v in report.tournaments.items()]  # fmt: skip
    log_table(rows, "Tournaments (paired bootstrap over learners, NDCG@10)", _log)
    if absent:
        _log.info("features not available (no such column): %s", absent)
    _log.info("served lists: %s rows for %s learners, first source %s -> %s",
              f"{lists['rows']:,}", f"{lists['learners']:,}", lists["learners_by_first_source"],
              lists["path"])  # fmt: skip
    _log.info("timings (s): %s", ", ".join(f"{k}={v:.3g}" for k, v in timings.items()))
    _log.info("wrote %s", out_dir)


def run(cfg: DictConfig, overrides: Sequence[str] | None) -> dict[str, Any]:
    """From a finished pipeline run's folder (`run_dir`): its data, models and settings, the
    blend settings changed by the command line's `overrides` alone
    (`experiments.retrain.rerun_in_run`)."""
    use_threads(cfg.get("threads"))
    run_dir = Path(cfg.run_dir)

    def compute(merged: DictConfig, data: PreparedData, folder: Path) -> dict[str, Any]:
        final, early = Models.load(run_dir), Models.load_early(run_dir)
        return blend_and_report(merged, data, final, early, folder)

    return rerun_in_run(cfg, overrides, "blend", compute, folder="blend")


@hydra.main(version_base="1.3", config_path="../conf", config_name="blend")
def main(cfg: DictConfig) -> None:
    log_into_run_folder(cfg.paths.output_dir, HydraConfig.get().job.name)
    run(cfg, command_overrides())


if __name__ == "__main__":
    main()
