"""The figures of one training run (`ncf.plots` does the drawing): each a PNG plus its numbers.

courses_<method>_popularity.png                 course embeddings coloured by log(1 + watches),
                                                always drawn (any catalogue has it)
courses_<method>_<column>.png                   ... and by each categorical column of the
                                                catalogue (language, category, difficulty, ...)
neighbours_<course>.png / .csv                  a course's 50 nearest courses, with titles
learners_<method>_segment.png                   learner embeddings coloured by segment
training_curves.png / .csv                      loss and validation metrics per step
Every figure that cannot be drawn says why in the run's log (this module's logger).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ncf.plots import embedding_map, neighbour_figure, training_curves
from ncf.recommender import NCFRecommender
from watchlog import EventLog

__all__ = ["categorical_columns", "course_popularity", "plot_run"]

_log = logging.getLogger(__name__)

_MAX_LEARNERS = 10_000  # learner maps are subsampled (seeded) beyond this
MAX_CATEGORIES = 50  # a column with more distinct values is no colouring (titles, skill lists)
_NOT_LABELS = ("course_id", "learner_id", "title")


def categorical_columns(table: pd.DataFrame) -> list[str]:
    """Columns of an entity table that label its rows by category: strings / categoricals /
    booleans with 2 to `MAX_CATEGORIES` distinct values (ids and titles excluded)."""
    out = []
    for c in table.columns:
        s = table[c]
        if (
            c in _NOT_LABELS
            or pd.api.types.is_numeric_dtype(s)
            and not pd.api.types.is_bool_dtype(s)
        ):
            continue
        if pd.api.types.is_datetime64_any_dtype(s):
            continue
        if 2 <= s.nunique(dropna=True) <= MAX_CATEGORIES:
            out.append(c)
    return out


def course_popularity(log: EventLog) -> np.ndarray:
    """(n_courses,) log(1 + watches) per course (events when the log has no `watched` flag)."""
    ev = log.events
    rows = ev["watched"].to_numpy() if "watched" in ev.columns else slice(None)
    counts = np.bincount(ev["course_idx"].to_numpy()[rows], minlength=log.n_courses)
    return np.log1p(counts).astype(np.float32)


def plot_run(
    rec: NCFRecommender,
    log: EventLog,
    metrics_csv: str | None,
    out_dir: str | os.PathLike,
    *,
    method: str = "umap",
    course_id: Any = None,
    seed: int = 0,
) -> dict[str, str]:
    """Draw every figure the run has data for; returns {what: path}."""
    out_dir = Path(out_dir)
    written: dict[str, str] = {}
    courses = log.courses
    course_emb = rec.course_embeddings(with_bias=False).cpu().numpy()
    colour = {"popularity": course_popularity(log)}  # always there: the map always draws
    labels = categorical_columns(courses)
    colour.update({c: courses[c].to_numpy() for c in labels})
    if not labels:
        _log.info(
            "course map: coloured by popularity only; the catalogue has no categorical column "
            "(2 to %d distinct values) to colour by (columns: %s)", MAX_CATEGORIES,
            list(courses.columns),
        )  # fmt: skip
    cmap = embedding_map(
        course_emb, colour, out_dir, "courses", method=method, seed=seed,
        ids=rec.course_ids.index.to_numpy(),
    )  # fmt: skip
    written.update({f"courses:{k}": str(v) for k, v in cmap.files.items()})

    # Neighbour figure: the chosen course, or the most watched one before the serving cutoff.
    if course_id is None:
        watched = np.asarray(rec.snapshot.seen.sum(axis=0)).ravel()
        index = int(watched.argmax())
    else:
        index = int(rec.course_ids.to_index([course_id])[0])
    if "title" in courses.columns:
        titles = courses["title"].to_numpy()
    else:
        titles = rec.course_ids.index
        _log.info("neighbour figure: the catalogue has no title column; labelled by course id")
    nfig = neighbour_figure(
        course_emb, index, titles, rec.course_ids.index.to_numpy(), out_dir, n=50,
        method=method, seed=seed, coords=cmap.coords,
    )  # fmt: skip
    written.update({f"neighbours:{k}": str(v) for k, v in nfig.files.items()})

    learners = log.learners
    if "segment" in learners.columns and learners["segment"].notna().any():
        rng = np.random.default_rng(seed)
        n = log.n_learners
        rows = (
            np.sort(rng.choice(n, _MAX_LEARNERS, replace=False))
            if n > _MAX_LEARNERS
            else np.arange(n)
        )
        emb = rec.learner_embeddings_at(rows).cpu().numpy()
        if rec.model.course_bias is not None:
            emb = emb[:, :-1]  # the constant bias column carries no information
        lmap = embedding_map(
            emb, {"segment": learners["segment"].to_numpy()[rows]}, out_dir, "learners",
            method=method, seed=seed, ids=rec.learner_ids.index.to_numpy()[rows],
        )  # fmt: skip
        written.update({f"learners:{k}": str(v) for k, v in lmap.files.items()})
    else:
        _log.info("learner map: skipped, the learner table has no segment values to colour by")

    if metrics_csv is not None and Path(metrics_csv).exists():
        curves = training_curves(metrics_csv, out_dir)
        written.update({f"curves:{k}": str(v) for k, v in curves.files.items()})
    else:
        _log.info("training curves: skipped, no metrics file from the trainer's CSV logger (%s)",
                  metrics_csv)  # fmt: skip
    return written
