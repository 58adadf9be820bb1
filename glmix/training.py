"""Fit GLMix on a split: rows -> features -> designs -> weights -> coordinate descent chosen
on validation -> optional refit on train + valid -> test once. Nothing is chosen on test.

    trained = fit_on_split(log, split, model=GLMix(...), featurizer=EntityFeaturizer(...),
                           weighting={"kind": "log1p", "scale": 60}, refit=True)
    trained.scorer.save("run/glmix/model")       # GLMixScorer: model + featurizer
    trained.metrics["test"]["auc"]

The refit repeats the selected fit on the refit rows (train + valid), stopping after the
update kept on validation (`max_updates = best update + 1`: the same pass *and* coordinate),
with label factors recomputed from the refit rows; the encoders see only the entity tables.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sklearn.base import clone

from evaluation import auc
from glmix.featurizer import EncodedEntities, EntityFeaturizer
from glmix.model import ComponentScores, GLMix
from glmix.rows import ROLES, RowSet, row_sets, sample_weights
from glmix.scorer import GLMixScorer
from watchlog.eventlog import EventLog
from watchlog.features import FeatureBlock
from watchlog.report import DataReport
from watchlog.splits import Split

__all__ = ["TrainedGLMix", "fit_on_split", "fit_featurizer", "row_designs", "evaluate_rows"]


@dataclass(frozen=True, eq=False)
class TrainedGLMix:
    """scorer: the final model (refitted when asked) with its featurizer; selected: the model
    fitted on train and chosen on validation (its history_ and best_); selected_scorer: that
    model with its own featurizer (label factors of the training rows), i.e. what scores the
    validation window without having seen it (the same object as scorer without a refit);
    metrics: best_update (kept), best_valid_update,
    refit, train_rows, weights, valid, test; rows: the row sets; test_scores: the final
    model's scores of rows["test"] (designs of this pipeline); timings in seconds."""

    scorer: GLMixScorer
    selected: GLMix
    metrics: dict[str, Any]
    rows: dict[str, RowSet]
    test_scores: ComponentScores
    timings: dict[str, float] = field(default_factory=dict)
    selected_scorer: GLMixScorer | None = None


def fit_featurizer(
    template: EntityFeaturizer, log: EventLog, rows: RowSet, report: DataReport | None = None
) -> EntityFeaturizer:
    """A fresh copy of `template` fitted on the log's entity tables, with label factors (when
    it has a factor_rank) from `rows` only."""
    ids = rows.id_columns
    return clone(template).fit(
        log.learners, log.courses,
        learner_ids=ids["learner"], course_ids=ids["course"], y=rows.y, report=report,
    )  # fmt: skip


def row_designs(
    featurizer: EntityFeaturizer, encoded: EncodedEntities, rows: RowSet
) -> dict[str, FeatureBlock]:
    """The designs of `rows` (ids looked up in the encoded tables, as the scorer does)."""
    ids = rows.id_columns  # categorical columns: looked up per category, not per row
    lpos, lu = encoded.positions("learner", ids["learner"])
    cpos, cu = encoded.positions("course", ids["course"])
    if lu.any() or cu.any():
        raise ValueError(
            f"{rows.name} rows: {int(lu.sum()):,} learner and {int(cu.sum()):,} course ids are "
            "not in the entity tables they were encoded from (use the same event log)"
        )
    return featurizer.designs(encoded, lpos, cpos)


def evaluate_rows(model: GLMix, designs, rows: RowSet, weights=None) -> dict[str, Any]:
    """GLMix.evaluate (per learner) + rows, positives and, with weights, the AUC with rows
    weighted as in training (long-watched clicks count more)."""
    keys = rows.id_columns
    res = model.evaluate(designs, keys, rows.y, per_entity="learner")
    res["rows"] = len(rows)
    res["positives"] = int(rows.y.sum())
    if weights is not None:
        res["auc_watch_weighted"] = auc(rows.y, model.predict_logit(designs, keys), weights)
    return res


def fit_on_split(
    log: EventLog,
    split: Split,
    *,
    model: GLMix,
    featurizer: EntityFeaturizer,
    events: str = "impressions",
    label: str = "clicked",
    negatives: str = "impressions",
    negative_ratio: float = 4.0,
    seed: int = 0,
    weighting: Mapping[str, Any] | None = None,
    refit: bool = False,
    report: DataReport | None = None,
    state_dir: str | os.PathLike | None = None,
) -> TrainedGLMix:
    """Fit, choose on validation, optionally refit, test once (see the module docstring).

    model, featurizer: unfitted templates (copied, never changed). events, label, negatives,
    negative_ratio, seed: which rows (`glmix.rows.row_sets`; seed draws sampled negatives). weighting: `glmix.rows.sample_weights` keywords (kind,
    scale, cap, min_watch_seconds); None = every row weighs 1.
    state_dir: a folder for the coordinate-descent progress of the fit and of the refit
    (`GLMix.fit(state_path=...)`), so a killed run called again resumes after the last
    finished update; the files are removed once the test is scored.
    """
    states = {k: None if state_dir is None else Path(state_dir) / f"glmix_{k}.state.npz"
              for k in ("selected", "refit")}  # fmt: skip
    start = time.perf_counter()
    weighting = dict(weighting or {"kind": "none"})
    kw = {"events": events, "label": label, "negatives": negatives,
          "negative_ratio": negative_ratio, "seed": seed, "log": log}  # fmt: skip
    rows = row_sets(split, **kw, report=report)
    feats = fit_featurizer(featurizer, log, rows["train"], report)
    enc = feats.encode(log.learners, log.courses, report)
    D = {k: row_designs(feats, enc, rows[k]) for k in ("train", "valid")}
    W = {
        k: sample_weights(rows[k], courses=log.courses, **weighting)
        for k in ("train", "valid", "test")
    }
    # The selection fit needs of the training rows their ids and labels alone, and nothing of
    # the refit rows: both row sets (events of every column, at 4M training rows ~0.16 GiB
    # each) are dropped for it and built again after it, the same rows (no second report step)
    train = rows.pop("train")
    ids, y = train.id_columns, train.y
    del train, rows["refit"]
    timings = {"prepare": time.perf_counter() - start}

    t = time.perf_counter()
    selected = clone(model).fit(
        D["train"], ids, y, sample_weight=W["train"][0],
        validation=(D["valid"], rows["valid"].id_columns, rows["valid"].y),
        state_path=states["selected"],
    )  # fmt: skip
    timings["fit"] = time.perf_counter() - t
    valid = evaluate_rows(selected, D["valid"], rows["valid"], W["valid"][0])
    del D, ids, y
    again = row_sets(split, **kw, roles=("train", "refit"))
    rows = {k: rows[k] if k in rows else again[k] for k in ROLES}

    final, train_rows = selected, rows["train"]
    # The end of each model's fitted rows (validation's inputs; the refit's: test's inputs), so
    # the blend can refuse a window the model has learned the labels of. Unknown on an
    # untimed (random, stratified) split.
    temporal = split.kind == "temporal"
    selected_end = split.valid.cutoff if temporal else None
    selected_scorer = GLMixScorer(selected, feats, trained_through=selected_end)
    if refit:
        t = time.perf_counter()
        final, feats, enc = _refit(
            model,
            selected,
            featurizer,
            feats,
            enc,
            log,
            rows["refit"],
            weighting,
            states["refit"],
        )
        train_rows = rows["refit"]
        timings["refit"] = time.perf_counter() - t
    t = time.perf_counter()
    D_test = row_designs(feats, enc, rows["test"])
    test = evaluate_rows(final, D_test, rows["test"], W["test"][0])
    test_scores = final.score_components(D_test, rows["test"].id_columns)
    timings["test"] = time.perf_counter() - t
    metrics = {
        "best_update": selected.best_,  # the update the selected model holds
        "best_valid_update": selected.best_valid_,  # the best on validation (kept or not)
        "refit": bool(refit),
        "refit_updates": len(final.history_) if refit else None,
        "train_rows": len(train_rows),
        "negatives": negatives,
        "rows": {
            k: {
                "rows": len(r),
                "positives": int(r.y.sum()),
                ("sampled_negatives" if negatives == "sampled" else "negatives"): len(r)
                - int(r.y.sum()),
            }
            for k, r in rows.items()
        },  # fmt: skip
        "weights": {k: v[1] for k, v in W.items()},
        "valid": valid,
        "test": test,
    }
    for path in states.values():
        if path is not None:
            path.unlink(missing_ok=True)
    refit_end = split.test.cutoff if temporal else None
    scorer = GLMixScorer(final, feats, trained_through=refit_end) if refit else selected_scorer
    return TrainedGLMix(
        scorer, selected, metrics, rows, test_scores, timings, selected_scorer=selected_scorer
    )


def _refit(model, selected, featurizer, feats, enc, log, rows: RowSet, weighting, state_path):
    """The selected model's settings on `rows`, stopped after the kept update."""
    if selected.keep_best:  # the kept update: its pass and its coordinate
        params = {"passes": selected.best_["pass"] + 1, "max_updates": selected.best_["update"] + 1}
    else:  # every update ran and the last one was kept
        params = {}
    if featurizer.factor_rank:  # label factors from the refit rows; encoders unchanged
        feats = fit_featurizer(featurizer, log, rows)
        enc = feats.encode(log.learners, log.courses)
    w, _ = sample_weights(rows, courses=log.courses, **weighting)
    final = clone(model).set_params(keep_best=False, **params)
    final.fit(row_designs(feats, enc, rows), rows.id_columns, rows.y, sample_weight=w,
              state_path=state_path)  # fmt: skip
    return final, feats, enc
