"""The figures of one training run (`ncf.plots` does the drawing): each a PNG plus its numbers.

courses_<method>_language.png / _category.png   course embeddings coloured by label
neighbours_<course>.png / .csv                  a course's 50 nearest courses, with titles
learners_<method>_segment.png                   learner embeddings coloured by segment
training_curves.png / .csv                      loss and validation metrics per step
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ncf.plots import embedding_map, neighbour_figure, training_curves
from ncf.recommender import NCFRecommender
from watchlog import EventLog

__all__ = ["plot_run"]

_MAX_LEARNERS = 10_000  # learner maps are subsampled (seeded) beyond this


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
    colour = {
        c: courses[c].to_numpy()
        for c in ("language", "category")
        if c in courses.columns and courses[c].notna().any()
    }
    cmap = None
    if colour:
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
    titles = courses["title"].to_numpy() if "title" in courses.columns else rec.course_ids.index
    nfig = neighbour_figure(
        course_emb, index, titles, rec.course_ids.index.to_numpy(), out_dir, n=50,
        method=method, seed=seed, coords=None if cmap is None else cmap.coords,
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

    if metrics_csv is not None and Path(metrics_csv).exists():
        curves = training_curves(metrics_csv, out_dir)
        written.update({f"curves:{k}": str(v) for k, v in curves.files.items()})
    return written
