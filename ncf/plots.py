"""Embedding plots and training curves: each figure is a PNG plus the numbers behind it.

    m = embedding_map(course_emb, {"language": courses["language"],
                                   "category": courses["category"]}, out, "courses")
    # -> out/courses_umap_language.png, out/courses_umap_category.png, out/courses_umap.parquet
    embedding_map(learner_emb, {"segment": learners["segment"]}, out, "learners")
    neighbour_figure(course_emb, 42, courses["title"], courses["course_id"], out,
                     coords=m.coords)            # reuse the map instead of projecting again
    training_curves("lightning_logs/version_0/metrics.csv", out)

Projection. "umap": exact cosine 15-nearest neighbours computed in chunks by
`ncf.retrieval.similar_by_cosine` (torch), handed to umap-learn as `precomputed_knn`, so its
approximate NN search (and its slow numba compilation) is skipped; layout with min_dist 0.1
and 200 epochs. 10,000 points x 64 dims take about 7 s on 2 busy cores once umap's numba
functions are compiled; the first UMAP in a process adds 15-30 s of compilation.
`seed` (an int) makes the layout reproducible, bit for bit on the same machine and
library versions, and makes umap run single-threaded (umap's rule); `seed=None` lets it use
every core and gives a different layout each run. "pca": scikit-learn PCA to 2 components
(deterministic up to sign conventions; `seed` only matters for its randomized solver).
More than `max_points` rows are subsampled (seeded) before projecting; the Parquet says which.

Figures are drawn on `matplotlib.figure.Figure` objects (the Agg canvas), never through
pyplot, so importing this module changes no global backend. All files are written atomically.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from evaluation._checks import check_choice, few
from ncf.retrieval import similar_by_cosine
from watchlog.io import atomic_path, write_parquet, write_text

__all__ = [
    "METHODS",
    "EmbeddingMap",
    "NeighbourFigure",
    "TrainingCurves",
    "project_2d",
    "embedding_map",
    "neighbour_figure",
    "training_curves",
]

METHODS = ("umap", "pca")
MAX_POINTS = 20_000
MAX_LEGEND = 12  # categories with their own colour; the rest are drawn as "other"
_OTHER, _MISSING = "other", "missing"


# ---- projection -------------------------------------------------------------------------------
def _embeddings(emb: Any) -> np.ndarray:
    x = emb.detach().cpu().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"emb: expected a 2-D (n_rows >= 2, d) array; got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"emb: expected floating-point embeddings; got dtype {x.dtype}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(
            f"emb: must be finite; {bad.size:,} row(s) hold NaN/inf (e.g. rows {few(bad)})"
        )
    return x.astype(np.float32, copy=False)


def project_2d(
    emb: Any,
    method: str = "umap",
    *,
    seed: int | None = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int = 200,
) -> np.ndarray:
    """(n, d) embeddings -> (n, 2) float32 coordinates by UMAP (cosine) or PCA (module doc)."""
    check_choice("method", method, METHODS)
    x = _embeddings(emb)
    n = x.shape[0]
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    if n <= 2:
        raise ValueError(f"emb: UMAP needs at least 3 rows; got {n}")
    import umap  # slow import (numba): only when asked for

    k = min(n_neighbors, n - 1)
    nbr, cos = similar_by_cosine(x, np.arange(n), k - 1)  # (n, k-1) exact, self excluded
    knn_idx = np.concatenate([np.arange(n)[:, None], nbr], axis=1)  # (n, k): self first, as umap
    knn_dist = np.concatenate([np.zeros((n, 1), np.float32), 1.0 - cos], axis=1).clip(0.0)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        metric="cosine",
        n_epochs=n_epochs,
        random_state=seed,
        n_jobs=1 if seed is not None else -1,
        precomputed_knn=(knn_idx, knn_dist),
        force_approximation_algorithm=True,  # use our kNN even below umap's 4,096-row cut
    )
    with warnings.catch_warnings():
        # expected: no search index for .transform (we never call it); seed forces 1 thread
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state.*")
        return reducer.fit_transform(x).astype(np.float32)


def _subsample(n: int, max_points: int, seed: int | None, keep: np.ndarray) -> np.ndarray:
    """Sorted rows to plot: all when n <= max_points, else `keep` plus a seeded sample."""
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points: must be an int >= 2; got {max_points!r}")
    if n <= max_points:
        return np.arange(n)
    rest = np.setdiff1d(np.arange(n), keep)
    extra = max(max_points - keep.size, 0)
    pick = np.random.default_rng(seed).choice(rest, size=extra, replace=False)
    return np.sort(np.concatenate([keep, pick]))


# ---- drawing --------------------------------------------------------------------------------
def _save_png(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def _label_series(name: str, labels: Any, n: int) -> pd.Series:
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    s = pd.Series(labels.to_numpy() if isinstance(labels, pd.Series | pd.Index) else labels)
    if s.ndim != 1 or len(s) != n:
        raise ValueError(
            f"colour_by[{name!r}]: expected one label per row of emb ({n:,}); got {len(s):,}"
        )
    return s.reset_index(drop=True)


def _column(s: pd.Series) -> pd.Series:
    """Numbers stay numbers; anything else becomes pandas strings (Parquet-safe, NA kept)."""
    return s if pd.api.types.is_numeric_dtype(s) else s.astype("string")


def _is_continuous(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and s.nunique() > MAX_LEGEND


def _point_size(n: int) -> float:
    return float(np.clip(30_000 / max(n, 1), 1.0, 20.0))


def _draw_map(xy: np.ndarray, labels: pd.Series, title: str, seed: int | None) -> Figure:
    fig = Figure(figsize=(8, 7))
    ax = fig.add_subplot()
    size = _point_size(len(xy))
    order = np.random.default_rng(seed).permutation(len(xy))  # no class always on top
    if _is_continuous(labels):
        v = labels.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~np.isnan(v)
        ax.scatter(*xy[~ok].T, s=size, c="lightgrey", label=f"{_MISSING} ({(~ok).sum():,})")
        o = order[ok[order]]
        sc = ax.scatter(xy[o, 0], xy[o, 1], c=v[o], s=size, cmap="viridis", alpha=0.8)
        fig.colorbar(sc, ax=ax, label=labels.name)
        if (~ok).any():
            ax.legend(loc="best", fontsize=8)
    else:
        text = labels.astype("string").fillna(_MISSING)
        counts = text.value_counts()
        top = [c for c in counts.index if c != _MISSING][:MAX_LEGEND]
        shown = text.where(text.isin(top) | (text == _MISSING), _OTHER)
        cmap = _categorical_colours(len(top))
        colour = {c: cmap[i] for i, c in enumerate(top)}
        colour[_OTHER], colour[_MISSING] = "#999999", "#dddddd"
        cols = shown.map(colour).to_numpy()
        ax.scatter(xy[order, 0], xy[order, 1], c=cols[order], s=size, alpha=0.8, linewidths=0)
        handles = [
            ax.scatter([], [], color=colour[c], s=30, label=f"{c} ({(shown == c).sum():,})")
            for c in [*top, _OTHER, _MISSING]
            if (shown == c).any()
        ]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _categorical_colours(n: int) -> list:
    from matplotlib import colormaps

    base = colormaps["tab10" if n <= 10 else "tab20"]
    return [base(i % base.N) for i in range(n)]


# ---- public figures -------------------------------------------------------------------------
@dataclass
class EmbeddingMap:
    """coords: one row per plotted point: row (index into emb), [id,] x, y, one column per
    colouring. files: what was written, by key ("parquet", "png:<colouring>")."""

    coords: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


def embedding_map(
    emb: Any,
    colour_by: dict[str, Any],
    out_dir: str | os.PathLike,
    name: str,
    *,
    method: str = "umap",
    seed: int | None = 0,
    max_points: int = MAX_POINTS,
    ids: Any = None,
) -> EmbeddingMap:
    """A 2-D map of `emb` coloured by each entry of `colour_by`.

    colour_by: {colouring name: (n_rows,) labels}. Categorical labels get a colour for each of
    the 12 most frequent values, "other" for the rest and "missing" for None/NaN; numeric labels
    with more than 12 distinct values get a continuous colour scale.
    ids: optional (n_rows,) caller ids, copied into the Parquet.
    Writes <out_dir>/<name>_<method>_<colouring>.png for every colouring and
    <out_dir>/<name>_<method>.parquet (coordinates + labels); characters other than letters,
    digits, '-', '_' and '.' in names become '_' in file names. Learner embeddings coloured by
    segment are the same call: `embedding_map(learner_emb, {"segment": seg}, out, "learners")`.
    """
    x = _embeddings(emb)
    n = x.shape[0]
    if not isinstance(colour_by, dict) or not colour_by:
        raise ValueError("colour_by: must be a non-empty dict {name: labels}")
    clash = [k for k in colour_by if k in ("row", "id", "x", "y")]
    if clash:
        raise ValueError(f"colour_by: names {clash} clash with the coordinate columns row/id/x/y")
    labels = {k: _label_series(k, v, n) for k, v in colour_by.items()}
    rows = _subsample(n, max_points, seed, np.zeros(0, dtype=np.int64))
    xy = project_2d(x[rows], method, seed=seed)  # (len(rows), 2)
    frame = pd.DataFrame({"row": rows})
    if ids is not None:
        frame["id"] = _column(_label_series("ids", ids, n).iloc[rows].reset_index(drop=True))
    frame["x"], frame["y"] = xy[:, 0], xy[:, 1]
    for k, s in labels.items():
        frame[k] = _column(s.iloc[rows].reset_index(drop=True).rename(k))
    out_dir = Path(out_dir)
    files: dict[str, Path] = {}
    shown = f"{len(rows):,} of {n:,}" if len(rows) < n else f"{n:,}"
    for k in labels:
        fig = _draw_map(xy, frame[k].rename(k), f"{name}: {method.upper()} by {k} ({shown})", seed)
        files[f"png:{k}"] = _save_png(fig, out_dir / f"{_safe(name)}_{method}_{_safe(k)}.png")
    files["parquet"] = write_parquet(out_dir / f"{_safe(name)}_{method}.parquet", frame)
    return EmbeddingMap(frame, files)


@dataclass
class NeighbourFigure:
    """table: rank (1 = nearest), row, id, title, cosine, x, y of the chosen item's neighbours
    (rank 0 = the chosen item itself, cosine 1). files: "png", "csv", "parquet"."""

    table: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


def _coords_for(coords: Any, rows: np.ndarray, n: int) -> np.ndarray:
    """(len(rows), 2) coordinates of `rows` from an (n, 2) array or an EmbeddingMap frame."""
    if isinstance(coords, pd.DataFrame):
        lookup = np.full((n, 2), np.nan, dtype=np.float64)
        lookup[coords["row"].to_numpy()] = coords[["x", "y"]].to_numpy()
        coords = lookup
    c = np.asarray(coords, dtype=np.float64)
    if c.shape != (n, 2):
        raise ValueError(f"coords: expected shape (n_rows, 2) = ({n:,}, 2); got {c.shape}")
    missing = rows[np.isnan(c[rows]).any(axis=1)]
    if missing.size:
        raise ValueError(
            f"coords: no coordinates for {missing.size:,} row(s) needed here (e.g. rows "
            f"{few(missing)}); project with max_points >= n_rows, or pass coords=None"
        )
    return c[rows]


def neighbour_figure(
    emb: Any,
    item_index: int,
    titles: Any,
    ids: Any,
    out_dir: str | os.PathLike,
    *,
    n: int = 50,
    method: str = "umap",
    seed: int | None = 0,
    max_points: int = MAX_POINTS,
    coords: Any = None,
    name: str = "neighbours",
) -> NeighbourFigure:
    """The `n` items nearest (cosine) to `emb[item_index]`, highlighted on a 2-D map and listed.

    titles, ids: (n_rows,) per-row title and caller id. coords: reuse a projection, either an
    (n_rows, 2) array or `EmbeddingMap.coords` (must cover the chosen item and its neighbours);
    None projects here (the chosen item and its neighbours are always among the points).
    Writes <out_dir>/<name>_<id>.png, .csv and .parquet (the table, nearest first).
    """
    x = _embeddings(emb)
    m = x.shape[0]
    if isinstance(item_index, bool) or not isinstance(item_index, int | np.integer):
        raise TypeError(f"item_index: expected an int row of emb; got {item_index!r}")
    if not 0 <= item_index < m:
        raise ValueError(f"item_index: must be in [0, {m:,}); got {item_index}")
    title_s, id_s = _label_series("titles", titles, m), _label_series("ids", ids, m)
    nbr, cos = similar_by_cosine(x, [int(item_index)], n)  # (1, n) each
    ok = nbr[0] >= 0  # padding when n >= m
    nbr, cos = nbr[0][ok], cos[0][ok]
    chosen = np.concatenate([[int(item_index)], nbr])  # (1 + n,) rows
    if coords is None:
        rows = _subsample(m, max_points, seed, np.sort(chosen))
        xy = project_2d(x[rows], method, seed=seed)
        pos = np.searchsorted(rows, chosen)
        xy_all, xy_chosen = xy, xy[pos]
    else:
        xy_chosen = _coords_for(coords, chosen, m)
        if isinstance(coords, pd.DataFrame):  # the points of that map (maybe a subsample)
            xy_all = coords[["x", "y"]].to_numpy(dtype=np.float64)
        else:
            xy_all = _coords_for(coords, np.arange(m), m)
    table = pd.DataFrame(
        {
            "rank": np.arange(chosen.size),
            "row": chosen,
            "id": _column(id_s.iloc[chosen]).to_numpy(),
            "title": title_s.iloc[chosen].astype("string").to_numpy(),
            "cosine": np.concatenate([[1.0], cos]).astype(np.float32),
            "x": xy_chosen[:, 0],
            "y": xy_chosen[:, 1],
        }
    )
    fig = _draw_neighbours(xy_all, xy_chosen, table)
    fig.suptitle(f"{title_s.iloc[item_index]} (id {id_s.iloc[item_index]}): {nbr.size} nearest")
    stem = f"{_safe(name)}_{_safe(id_s.iloc[item_index])}"  # ids may hold '.': no with_suffix
    out_dir = Path(out_dir)
    files = {
        "png": _save_png(fig, out_dir / f"{stem}.png"),
        "csv": write_text(out_dir / f"{stem}.csv", table.to_csv(index=False)),
        "parquet": write_parquet(out_dir / f"{stem}.parquet", table),
    }
    return NeighbourFigure(table, files)


def _draw_neighbours(xy_all: np.ndarray, xy_chosen: np.ndarray, table: pd.DataFrame) -> Figure:
    """Left: the whole map, neighbours highlighted. Right: zoomed on the neighbours, the 10
    nearest labelled (on a UMAP map they often sit in one tight clump)."""
    fig = Figure(figsize=(15, 6.5))
    cos = table["cosine"].to_numpy()[1:]
    lo, hi = xy_chosen.min(axis=0), xy_chosen.max(axis=0)
    pad = np.maximum((hi - lo) * 0.15, 1e-3 * (xy_all.max(axis=0) - xy_all.min(axis=0)) + 1e-9)
    for i, zoom in enumerate((False, True)):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.scatter(*xy_all.T, s=_point_size(len(xy_all)), c="#dddddd", linewidths=0)
        sc = ax.scatter(
            xy_chosen[1:, 0],
            xy_chosen[1:, 1],
            c=cos,
            cmap="viridis",
            s=30,
            edgecolors="k",
            linewidths=0.3,
            label=f"{cos.size} nearest",
        )
        ax.scatter(*xy_chosen[0], marker="*", s=300, c="red", edgecolors="k", label="chosen")
        ax.set_xticks([])
        ax.set_yticks([])
        if zoom:
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            for r in table.iloc[:11].itertuples():  # the chosen item + its 10 nearest
                ax.annotate(
                    str(r.title)[:40],
                    (r.x, r.y),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
            ax.set_title("zoomed on the neighbours")
            fig.colorbar(sc, ax=ax, label="cosine to the chosen item")
        else:
            ax.set_title("whole map")
            ax.legend(loc="best", fontsize=8)
    return fig


def _safe(value: Any) -> str:
    """An id as a file-name part: letters, digits, '-', '_' and '.' only."""
    text = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(value))
    return text[:80] or "item"


# ---- training curves ------------------------------------------------------------------------
@dataclass
class TrainingCurves:
    """tidy: one row per logged value: metric, epoch, step, value (NaN cells dropped).
    files: "png", "csv"."""

    tidy: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


def training_curves(
    metrics_csv: str | os.PathLike, out_dir: str | os.PathLike, name: str = "training_curves"
) -> TrainingCurves:
    """Lightning CSVLogger's metrics.csv -> <out_dir>/<name>.png and <name>.csv (tidy).

    CSVLogger writes one row per logging call, with NaN in the columns not logged by it
    (train_loss_step rows, validation rows, train_loss_epoch rows share the table), so each
    metric is taken from the rows where it is set. Plotted against the global step (the
    x of epoch-level metrics is the step where the epoch ended), with a dotted line at each
    epoch's first logged step; metrics whose name contains "loss" share the first panel, every
    other metric gets its own.
    """
    path = Path(metrics_csv)
    if not path.is_file():
        raise FileNotFoundError(f"metrics_csv: no such file {path}")
    raw = pd.read_csv(path)
    if "step" not in raw.columns:
        raise ValueError(
            f"metrics_csv {path}: expected a 'step' column (Lightning CSVLogger); "
            f"got columns {list(raw.columns)}"
        )
    if "epoch" not in raw.columns:
        raw["epoch"] = np.nan
    metrics = [c for c in raw.columns if c not in ("step", "epoch")]
    bad = [c for c in metrics if not pd.api.types.is_numeric_dtype(raw[c])]
    if bad:
        raise ValueError(f"metrics_csv {path}: non-numeric metric column(s) {few(bad)}")
    tidy = (
        raw.melt(id_vars=["epoch", "step"], value_vars=metrics, var_name="metric")
        .dropna(subset=["value"])
        .loc[:, ["metric", "epoch", "step", "value"]]
        .sort_values(["metric", "step"], kind="stable")
        .reset_index(drop=True)
    )
    if tidy.empty:
        raise ValueError(f"metrics_csv {path}: no logged values ({len(raw):,} rows, all NaN)")
    losses = [m for m in metrics if "loss" in m and (tidy["metric"] == m).any()]
    others = [m for m in metrics if m not in losses and (tidy["metric"] == m).any()]
    panels = ([losses] if losses else []) + [[m] for m in others]
    fig = Figure(figsize=(5.5 * min(len(panels), 3), 4 * ((len(panels) + 2) // 3)))
    epoch_starts = raw.dropna(subset=["epoch"]).groupby("epoch")["step"].min().to_numpy()
    for i, group in enumerate(panels):
        ax = fig.add_subplot((len(panels) + 2) // 3, min(len(panels), 3), i + 1)
        for m in group:
            d = tidy[tidy["metric"] == m]
            ax.plot(d["step"], d["value"], marker="o" if len(d) < 30 else None, ms=3, label=m)
        for s in epoch_starts[1:]:
            ax.axvline(s, color="#cccccc", lw=0.6, ls=":")
        ax.set_xlabel("step")
        ax.set_title(", ".join(group) if len(group) < 3 else "losses")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_dir = Path(out_dir)
    files = {
        "png": _save_png(fig, out_dir / f"{name}.png"),
        "csv": write_text(out_dir / f"{name}.csv", tidy.to_csv(index=False)),
    }
    return TrainingCurves(tidy, files)
