"""Train GLMix: `python -m experiments.train_glmix data=... glmix=... [overrides]`.

data stage -> row sets (train = validation fold inputs, valid = its labels, test = test fold
labels; `experiments.glmix_data`) -> entity features -> per-row designs -> watch-time weights
-> GLMix coordinate descent keeping the update best on validation -> optional refit on
train + valid with the chosen number of passes -> test once -> metrics, history, model,
manifest. Nothing is chosen on test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluation import auc
from experiments.data import PreparedData, prepare_data
from experiments.glmix_data import (
    EntityFeatures,
    RowSet,
    encode_entities,
    row_designs,
    row_sets,
    with_label_factors,
)
from experiments.provenance import write_manifest
from glmix import GLMix, watch_time_weights
from watchlog import DataReport, EventLog
from watchlog.io import atomic_path, write_json, write_parquet

__all__ = ["run", "sample_weights", "keys_of", "features_for", "designs_for"]


def sample_weights(rows: RowSet, log: EventLog, weighting: Any) -> tuple[np.ndarray | None, dict]:
    """Watch-time weights of `rows` (None when weighting.kind is none) and their counts."""
    w = dict(weighting)
    kind = w.pop("kind")
    if kind in (None, "none"):
        return None, {"kind": "none"}
    duration = None
    if kind == "fraction":
        duration = log.courses["duration_seconds"].to_numpy(np.float64)[rows.course_idx]
    res = watch_time_weights(
        rows.events["clicked"], rows.events["watch_seconds"], duration, kind=kind, **w
    )
    return res.weights, {"kind": kind, **res.counts}


def keys_of(rows: RowSet) -> dict[str, np.ndarray]:
    """Entity keys of the rows in the caller's ids (the model's id maps speak them)."""
    return {
        "learner": np.asarray(rows.events["learner_id"]),
        "course": np.asarray(rows.events["course_id"]),
    }


def features_for(cfg_glmix, base: EntityFeatures, train: RowSet, seed: int) -> EntityFeatures:
    """`base`, plus label-matrix factors of the `train` rows when the config asks for them."""
    lf = cfg_glmix.features.label_factors
    if not lf:
        return base
    return with_label_factors(base, train, rank=int(lf.rank), seed=seed, scale=float(lf.scale))


def designs_for(cfg_glmix, rows: RowSet, feats: EntityFeatures):
    """The per-row designs of `rows` as `cfg_glmix.design` lays them out."""
    d = cfg_glmix.design
    return row_designs(
        rows,
        feats,
        global_terms=list(d.global_terms),
        crosses=[list(c) for c in d.crosses],
        coordinates={k: list(v) for k, v in d.coordinates.items()},
    )


def _evaluate(model: GLMix, designs, keys, rows: RowSet, weights) -> dict[str, Any]:
    res = model.evaluate(designs, keys, rows.y, per_entity="learner")
    res["rows"] = len(rows)
    res["positives"] = int(rows.y.sum())
    if weights is not None:  # AUC with long-watched clicks counting more, as in training
        res["auc_watch_weighted"] = auc(rows.y, model.predict_logit(designs, keys), weights)
    return res


def run(cfg: DictConfig) -> dict[str, Any]:
    return train_and_report(cfg, None, Path(cfg.paths.output_dir))


def train_and_report(cfg: DictConfig, data: PreparedData | None, out_dir: Path) -> dict[str, Any]:
    """Data stage (unless `data` is given: the main pipeline passes what it prepared), fit,
    test once, write everything into `out_dir`."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    g = cfg.glmix
    start = time.perf_counter()
    if data is None:
        data = prepare_data(cfg.data, cfg.split, DataReport())
    report = data.report
    log = data.log
    rows = row_sets(data.split, events=g.rows.events, label=g.rows.label, report=report)
    base = encode_entities(
        log,
        OmegaConf.to_container(g.features.learner),
        OmegaConf.to_container(g.features.course),
        report,
    )
    feats = features_for(g, base, rows["train"], cfg.seed)
    D = {k: designs_for(g, rows[k], feats) for k in ("train", "valid")}
    W = {k: sample_weights(rows[k], log, g.weighting) for k in ("train", "valid", "test")}
    print(report, flush=True)
    report.write_json(out_dir / "data_report.json")
    timings = {"prepare": time.perf_counter() - start}

    t = time.perf_counter()
    model: GLMix = instantiate(g.model, _convert_="all")
    model.fit(
        D["train"],
        keys_of(rows["train"]),
        rows["train"].y,
        sample_weight=W["train"][0],
        validation=(D["valid"], keys_of(rows["valid"]), rows["valid"].y),
    )
    timings["fit"] = time.perf_counter() - t
    valid = _evaluate(model, D["valid"], keys_of(rows["valid"]), rows["valid"], W["valid"][0])

    final, final_feats, train_rows = model, feats, rows["train"]
    if g.refit:  # the same model with the passes chosen on validation, on train + valid
        t = time.perf_counter()
        passes = model.best_["pass"] + 1 if model.keep_best else int(model.passes)
        train_rows = rows["refit"]
        final_feats = features_for(g, base, train_rows, cfg.seed)
        w_refit, _ = sample_weights(train_rows, log, g.weighting)
        final = instantiate(g.model, _convert_="all").set_params(passes=passes, keep_best=False)
        final.fit(
            designs_for(g, train_rows, final_feats), keys_of(train_rows), train_rows.y,
            sample_weight=w_refit,
        )  # fmt: skip
        timings["refit"] = time.perf_counter() - t
    t = time.perf_counter()
    D_test = designs_for(g, rows["test"], final_feats)
    test = _evaluate(final, D_test, keys_of(rows["test"]), rows["test"], W["test"][0])
    timings["test"] = time.perf_counter() - t

    outputs = _write_outputs(cfg, final, final_feats, D_test, rows["test"], out_dir)
    timings["total"] = time.perf_counter() - start
    metrics = {
        "model": g.name,
        "best_update": model.best_,
        "refit": bool(g.refit),
        "train_rows": len(train_rows),
        "weights": {k: v[1] for k, v in W.items()},
        "valid": valid,
        "test": test,
    }
    write_json(
        out_dir / "metrics.json",
        {**metrics, "history": model.history_, "timings": timings, "outputs": outputs},
    )
    write_manifest(
        out_dir, cfg, data_fingerprint=log.fingerprint(), metrics=metrics, timings=timings
    )
    _print_summary(model, valid, test, timings, out_dir)
    return {**metrics, "history": model.history_, "timings": timings}


def _write_outputs(cfg, model: GLMix, feats: EntityFeatures, D_test, test: RowSet, out_dir):
    written: dict[str, str] = {}
    if cfg.outputs.model:
        written["model"] = str(model.save(out_dir / "model"))
        spec = {
            "encoders": feats.encoders,
            "design": OmegaConf.to_container(cfg.glmix.design, resolve=True),
            "learner_features": list(feats.learner.names),
            "course_features": list(feats.course.names),
        }
        written["features"] = str(write_json(out_dir / "features.json", spec))
        if "label_factors" in feats.encoders:  # entity-level arrays the designs need
            lo, hi = feats.learner.groups["factors"]
            co, ch = feats.course.groups["factors"]
            path = out_dir / "label_factors.npz"
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    learner=feats.learner.matrix[:, lo:hi].toarray(),
                    course=feats.course.matrix[:, co:ch].toarray(),
                )
            written["label_factors"] = str(path)
    if cfg.outputs.test_scores:
        sc = model.score_components(D_test, keys_of(test))
        frame = pd.DataFrame(
            {
                "learner_id": test.events["learner_id"].to_numpy(),
                "course_id": test.events["course_id"].to_numpy(),
                "y": test.y,
                "logit": sc.total,
                **{f"score_{c}": s for c, s in sc.components.items()},
            }
        )
        written["test_scores"] = str(write_parquet(out_dir / "test_scores.parquet", frame))
    return written


def _print_summary(model: GLMix, valid, test, timings, out_dir: Path) -> None:
    print("\nupdate  pass  coordinate    objective   val_auc")
    for i, h in enumerate(model.history_):
        print(f"{i:6d}  {h['pass']:4d}  {h['coordinate']:<12s}  {h['objective']:10.2f}  "
              f"{h.get('val_auc', float('nan')):.4f}")  # fmt: skip
    b = model.best_
    print(f"kept update {b['update']} (pass {b['pass']}, {b['coordinate']}), chosen on validation")
    for name, m in (("valid", valid), ("test", test)):
        print(
            f"{name}: auc={m['auc']:.4f} log_loss={m['log_loss']:.4f} "
            f"per_learner_auc={m['per_entity_auc_mean']:.4f} unknown={m['n_unknown']}"
        )
    print("timings (s): " + ", ".join(f"{k}={v:.3g}" for k, v in timings.items()))
    print(f"wrote {out_dir}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_glmix")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
