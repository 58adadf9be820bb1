"""`NCFRecommender`: a trained two-tower plus the snapshot it serves from, in the caller's ids.

    rec = NCFRecommender(model, snapshot, log.learner_ids, log.course_ids)
    ids, scores = rec.recommend(["u1", "u2"], N=10)          # (2, 10) course ids, scores
    ids, scores = rec.similar_courses(["c7"], N=50)           # cosine neighbours
    rec.export_embeddings("out/embeddings")                   # Parquet, caller ids
    rec.save("out/model"); rec = NCFRecommender.load("out/model")

Learner embeddings are computed in chunks from the snapshot's history bags; retrieval is one
matmul + top-k per chunk (`ncf.retrieval.top_k_by_dot`), so memory is bounded by the chunk.

Cold start. `cold_start="error"` (default) raises `UnknownIdError` for learner ids not in the
id map. `cold_start="empty_history"` scores them like a known learner with no watches in the
window: the learner tower on an empty bag, which is one fixed vector, so they all get the
same list (the model's prior over courses, close to popularity). A known learner with an
empty history gets that same list; that is the defined result, not an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from evaluation import resolve_device
from ncf.bags import csr_bags
from ncf.inputs import Snapshot, normalize_rows
from ncf.model import TwoTower
from ncf.retrieval import similar_by_cosine, top_k_by_dot
from watchlog.idmap import IdMap
from watchlog.io import atomic_directory, atomic_path, write_json

__all__ = ["COLD_START_POLICIES", "NCFRecommender"]

COLD_START_POLICIES = ("error", "empty_history")
_SNAPSHOT_PARTS = ("history", "seen", "course_bags")


class NCFRecommender:
    """See the module docstring. `normalize` must match how the model was trained."""

    def __init__(
        self,
        model: TwoTower,
        snapshot: Snapshot,
        learner_ids: IdMap,
        course_ids: IdMap,
        *,
        content: sp.csr_matrix | None = None,
        normalize: str = "mean",
        cold_start: str = "error",
        device: str | torch.device = "auto",
        chunk_size: int = 4096,
    ):
        if cold_start not in COLD_START_POLICIES:
            raise ValueError(
                f"cold_start: must be one of {COLD_START_POLICIES}, got {cold_start!r}"
            )
        shape = (len(learner_ids), len(course_ids))
        if snapshot.history.shape != shape or (model.n_learners, model.n_courses) != shape:
            raise ValueError(
                f"shapes disagree: id maps {shape}, snapshot history {snapshot.history.shape}, "
                f"model ({model.n_learners}, {model.n_courses})"
            )
        self.model, self.snapshot = model, snapshot
        self.learner_ids, self.course_ids = learner_ids, course_ids
        self.content, self.normalize, self.cold_start = content, normalize, cold_start
        self.device = resolve_device(device)
        self.chunk_size = chunk_size
        self.model.to(self.device).eval()
        self._history = normalize_rows(snapshot.history, normalize)
        self._courses: torch.Tensor | None = None

    # ---- embeddings -------------------------------------------------------------------------
    @torch.inference_mode()
    def course_embeddings(self, *, with_bias: bool = True) -> torch.Tensor:
        """(n_courses, d) on the device, computed once; with a course bias, its column is last
        (`with_bias=False` drops it, e.g. for plots and neighbour searches)."""
        if self._courses is None:
            dev = self.device
            content = None if self.content is None else csr_bags(self.content).to(dev)
            self._courses = self.model.courses(
                csr_bags(self.snapshot.course_bags).to(dev),
                torch.arange(self.model.n_courses, device=dev),
                content,
            )
        if not with_bias and self.model.course_bias is not None:
            return self._courses[:, :-1]
        return self._courses

    @torch.inference_mode()
    def learner_embeddings(self, learner_idx: np.ndarray) -> torch.Tensor:
        """(n, d) on the device for dense learner indices; index -1 = an empty history."""
        learner_idx = np.asarray(learner_idx, dtype=np.int64)
        unknown = learner_idx < 0
        if self.model.learner_tower.ids is not None and unknown.any():
            raise ValueError(
                "cold_start='empty_history' needs a model without learner ID embeddings: "
                f"{int(unknown.sum()):,} learners have no ID row"
            )
        out = []
        for start in range(0, len(learner_idx), self.chunk_size):
            part = learner_idx[start : start + self.chunk_size]
            # An unknown learner (-1) gets an empty bag: its row of the history is zeroed.
            rows = sp.diags((part >= 0).astype(np.float32)) @ self._history[np.maximum(part, 0)]
            rows.eliminate_zeros()
            ids = torch.from_numpy(np.maximum(part, 0)).to(self.device)
            out.append(self.model.learners(csr_bags(rows.tocsr()).to(self.device), ids))
        d = self.model.embedding_dim + (self.model.course_bias is not None)
        return torch.cat(out) if out else torch.zeros(0, d, device=self.device)

    def _learner_index(self, learner_ids: Sequence[Any]) -> np.ndarray:
        strict = self.cold_start == "error"
        return self.learner_ids.to_index(learner_ids, strict=strict).astype(np.int64)

    # ---- retrieval ----------------------------------------------------------------------------
    def recommend(
        self,
        learner_ids: Sequence[Any],
        N: int = 10,
        *,
        filter_already_watched: bool = True,
        candidates: Sequence[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-N courses per learner, best first: (ids (n, N), scores (n, N) float32).

        filter_already_watched: drop every course the learner watched before the snapshot's
          cutoff (`snapshot.seen`), not just the lookback window.
        candidates: course ids to choose from (the same list for every learner).
        Rows with fewer than N allowed courses are padded with None ids and -inf scores (the
        id array is then of object dtype).
        """
        idx = self._learner_index(learner_ids)
        queries = self.learner_embeddings(idx)
        exclude = None
        if filter_already_watched:
            # unknown learners (-1) have watched nothing: an empty row
            seen = self.snapshot.seen[np.maximum(idx, 0)]
            exclude = sp.diags((idx >= 0).astype(np.float32)) @ seen
        cand = None if candidates is None else self.course_ids.to_index(candidates).astype(np.int64)
        top, scores = top_k_by_dot(
            queries, self.course_embeddings(), N,
            exclude=exclude, candidates=cand, chunk_size=self.chunk_size, device=self.device,
        )  # fmt: skip
        return self._to_ids(top), scores

    def similar_courses(
        self, course_ids: Sequence[Any], N: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """The N most cosine-similar courses to each given course (itself excluded)."""
        idx = self.course_ids.to_index(course_ids).astype(np.int64)
        top, scores = similar_by_cosine(self.course_embeddings(with_bias=False), idx, N)
        return self._to_ids(top), scores

    def _to_ids(self, top: np.ndarray) -> np.ndarray:
        if (top >= 0).all():
            return self.course_ids.to_ids(top)
        out = np.full(top.shape, None, dtype=object)
        out[top >= 0] = self.course_ids.to_ids(top[top >= 0])
        return out

    # ---- export and persistence --------------------------------------------------------------
    def export_embeddings(self, directory: str | os.PathLike) -> dict[str, Path]:
        """learners.parquet and courses.parquet: caller id + `embedding` (fixed-size float32 list).

        The dot product of a learner's and a course's vectors is the model's score: with a
        course bias, the course vector's last entry is the bias and the learner's is 1."""
        directory = Path(directory)
        learners = self.learner_embeddings(np.arange(self.model.n_learners)).cpu().numpy()
        courses = self.course_embeddings().cpu().numpy()
        return {
            "learners": _write_embeddings(
                directory / "learners.parquet", self.learner_ids, learners
            ),
            "courses": _write_embeddings(directory / "courses.parquet", self.course_ids, courses),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Weights (torch state dict), config JSON, id maps (Parquet), snapshot (npz): no pickle."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, tmp / "weights.pt")
            write_json(
                tmp / "config.json",
                {"model": self.model.config, "normalize": self.normalize, "cold_start": self.cold_start,
                 "cutoff": None if self.snapshot.cutoff is None else str(self.snapshot.cutoff),
                 "snapshot": self.snapshot.name},
            )  # fmt: skip
            self.learner_ids.save(tmp / "learner_ids.parquet")
            self.course_ids.save(tmp / "course_ids.parquet")
            for part in _SNAPSHOT_PARTS:
                sp.save_npz(tmp / f"{part}.npz", getattr(self.snapshot, part))
            if self.content is not None:
                sp.save_npz(tmp / "content.npz", self.content)
        return directory

    @classmethod
    def load(
        cls, directory: str | os.PathLike, *, device: str | torch.device = "auto"
    ) -> NCFRecommender:
        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        model = TwoTower(**config["model"])
        state = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        parts = {p: sp.load_npz(directory / f"{p}.npz").tocsr() for p in _SNAPSHOT_PARTS}
        cutoff = pd.Timestamp(config["cutoff"]) if config["cutoff"] else None
        snapshot = Snapshot(config["snapshot"], cutoff=cutoff, **parts)
        content_path = directory / "content.npz"
        return cls(
            model, snapshot,
            IdMap.load(directory / "learner_ids.parquet"), IdMap.load(directory / "course_ids.parquet"),
            content=sp.load_npz(content_path).tocsr() if content_path.exists() else None,
            normalize=config["normalize"], cold_start=config["cold_start"], device=device,
        )  # fmt: skip


def _write_embeddings(path: Path, ids: IdMap, emb: np.ndarray) -> Path:
    d = emb.shape[1]
    values = pa.array(np.ascontiguousarray(emb, dtype=np.float32).ravel())
    table = pa.table(
        {
            ids.name: pa.array(ids.index.to_numpy()),
            "embedding": pa.FixedSizeListArray.from_arrays(values, d),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
