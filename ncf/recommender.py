"""`NCFRecommender`: a trained two-tower plus the snapshot it serves from, in the caller's ids.

    rec = NCFRecommender(model, snapshot, log.learner_ids, log.course_ids, inputs=builder)
    ids, scores = rec.recommend(["u1", "u2"], N=10)          # (2, 10) course ids, scores
    table = rec.recommend_table(["u1", "u2"], N=10)          # long table (watchlog.candidates)
    s = rec.score(["u1", "u1"], ["c3", "c9"])                 # (2,) float32, explicit pairs
    stats = rec.score_stats(["u1"])                           # mean, std, logsumexp per learner
    later = rec.at(log, "2024-06-01")                         # histories up to a later cutoff
    ids, scores = rec.similar_courses(["c7"], N=50)           # cosine neighbours
    rec.export_embeddings("out/embeddings")                   # Parquet, caller ids
    rec.save("out/model"); rec = NCFRecommender.load("out/model")

Learner embeddings are computed in chunks from the snapshot's history bags; retrieval is an
exact top-k per chunk (`ncf.retrieval.top_k_by_dot`: masked products and a threshold
select, faiss's flat search, or matmul + `torch.topk`), so memory is bounded by the chunk. `retrieval=ItemIndex("hnsw" | "ivf", ...)`
(or `recommend(..., method=)`) searches approximately instead, for catalogues of 100k+
courses: the index is built once per recommender, method and state of the model's weights
(course vectors are recomputed, and indexes refitted, after further training or
load_state_dict: `_weights_key`; a caller's fitted index must match the course vectors'
SHA-256, `ncf.ann.ItemIndex.check_items`); `method="exact"` always wins
(evaluation passes it). The setting is not saved with the model: a loaded recommender is
exact until given one (the pipeline sets it for the served lists: `blend.serve_retrieval`).
Every score here (recommend, recommend_table, score, score_table, score_stats) is the one
validation ranks by, `TwoTower.score`: the dot product of the learner's and the course's
vectors, course bias included (for a cosine model: of their unit vectors / temperature).

Cold start. `cold_start="error"` (default) raises `UnknownIdError` for learner ids not in the
id map. `cold_start="empty_history"` scores them like a known learner with no watches in the
window: the learner tower on an empty bag, which is one fixed vector, so they all get the
same list (the model's prior over courses, close to popularity). A known learner with an
empty history gets that same list; that is the defined result, not an error. A model with
learner ID embeddings has no ID row for an unknown learner: under "empty_history" its ID
vector is zero (the rows' prior mean), so unknown learners still share that one fixed vector
(a learner with an ID row keeps it, so its empty-history list differs). The ID rows of
learners that had no training row are zero too (`ncf.training.zero_untrained_id_rows`): such
a learner is served like one without an ID row. Batch serving (the blend's served lists)
uses "empty_history": `history_sizes` is 0 for such a learner and the fallback chain gives
it the popular lists; it never raises.

Serving later (`at`). `inputs` is the `InputBuilder` that made the training snapshots; `at(log,
T')` rebuilds history, `seen` and co-watch bags with it from a (cleaned) log before T', in the
model's course index, so a model trained up to T serves histories up to T' without retraining.
Courses the model does not know are left out (counted in `serving_report`, and a warning); the
learners served are the log's. A model with learner ID embeddings serves its own learners
with their ID rows (at the same indices: its learner map comes first) and the log's others,
new since training, after them: from their history with a zero ID vector, as a model without
ID embeddings serves every learner (a pure-ID model, MF, has no history input: they get the
cold-start list, and `history_sizes` 0). T' before
the model's training cutoff `model_cutoff` is refused unless `allow_earlier=True`: the model
was trained on labels after T', so scores there are not a fair backtest.

Saved folders (`save`) carry `format_version` 3: weights, config.json (model, input settings,
normalize, cold_start, chunk_size, content presence, cutoffs), id maps and snapshot (a folder
saved without chunk_size loads with the default, 4096). The model may be an ensemble of
two-towers (`ncf.ensemble.TwoTowerEnsemble`, served as one: version 3 lists its members). A folder from before version 2
still loads and serves its snapshot; its `at()` raises until it is re-saved with `inputs`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from evaluation import resolve_device
from ncf import serving
from ncf.ann import ItemIndex, check_method, positive_int
from ncf.bags import csr_bags
from ncf.ensemble import TwoTowerEnsemble, model_from_config
from ncf.inputs import InputBuilder, Snapshot, normalize_rows
from ncf.model import TwoTower
from ncf.retrieval import check_finite, similar_by_cosine, top_k_by_dot
from watchlog.candidates import COURSE, LEARNER, CandidateError
from watchlog.eventlog import EventLog
from watchlog.idmap import IdMap
from watchlog.io import (
    CorruptFolderError,
    atomic_directory,
    atomic_path,
    read_folder_json,
    write_json,
)
from watchlog.report import DataReport

__all__ = ["COLD_START_POLICIES", "FORMAT_VERSION", "SCORE_BLOCK", "NCFRecommender"]

COLD_START_POLICIES = ("error", "empty_history")
# 1: before input settings were saved (no `format_version` key); 2: before ensembles (a
# model config with `members`)
FORMAT_VERSION = 3
_SNAPSHOT_PARTS = ("history", "seen", "course_bags")
_UNKNOWN_PAIRS = ("error", "nan")
_DEFAULT_CHUNK = 4096  # learners per chunk; saved with the model (a folder without it: this)
# The most scores `score` and `score_stats` hold at once: (learners, n_courses) float32 blocks
# of max(1, SCORE_BLOCK // n_courses) learners (64 MB; the statistics' float64 copies 128 MB
# each), so their memory does not grow with the learners asked for (4,096 learners of a
# 50,000-course catalogue held 0.8 GB of scores, and score_stats 5.3 GB, in one chunk).
SCORE_BLOCK = 2**24


class NCFRecommender:
    """See the module docstring.

    model, snapshot: the trained `TwoTower` (or `TwoTowerEnsemble`) and what it serves from
      (`Snapshot`, no labels needed); learner_ids / course_ids: the id maps of the snapshot's rows and columns (the
      course map is the model's). With learner ID embeddings the learner map's first
      model.n_learners ids are the model's, in its order (index i = ID row i); any after them
      have no ID row (a zero ID vector: `at` appends learners new since training there).
    inputs: the `InputBuilder` that made the snapshots (None: `at` is unavailable).
    content: the course content matrix the model was trained with, if any.
    normalize: the learner bag normalization the model was trained with.
    model_cutoff: the latest cutoff the model's training saw (default: the snapshot's).
    Both cutoffs are kept as UTC timestamps (`serving.as_cutoff`: a naive one is read as UTC,
    a string parsed), so `at` can compare them with its cutoff and `save` writes them alike.
    device: where the model scores ("auto": CUDA when present). The model is the caller's
      object, not a copy (further training shows in the next scores): every scoring call puts
      it on this device and in eval mode first, so recommenders on two devices may share it
      (each call then moves it; give each its own copy to avoid the moves).
    """

    def __init__(
        self,
        model: TwoTower | TwoTowerEnsemble,
        snapshot: Snapshot,
        learner_ids: IdMap,
        course_ids: IdMap,
        *,
        inputs: InputBuilder | None = None,
        content: sp.csr_matrix | None = None,
        normalize: str = "mean",
        cold_start: str = "error",
        device: str | torch.device = "auto",
        chunk_size: int = _DEFAULT_CHUNK,
        model_cutoff: Any = None,
        retrieval: ItemIndex | None = None,
    ):
        if cold_start not in COLD_START_POLICIES:
            raise ValueError(
                f"cold_start: must be one of {COLD_START_POLICIES}, got {cold_start!r}"
            )
        if inputs is not None and not isinstance(inputs, InputBuilder):
            raise TypeError(f"inputs: must be an InputBuilder or None; got {type(inputs).__name__}")
        if retrieval is not None and not isinstance(retrieval, ItemIndex):
            raise TypeError(
                f"retrieval: must be an ncf.ann.ItemIndex or None (exact); got "
                f"{type(retrieval).__name__}"
            )
        n_l, n_c = len(learner_ids), len(course_ids)
        id_rows = model.learner_tower.ids is not None
        shapes = {
            "snapshot.history": (snapshot.history.shape, (n_l, n_c)),
            "snapshot.seen": (snapshot.seen.shape, (n_l, n_c)),
            "snapshot.course_bags": (snapshot.course_bags.shape, (n_c, n_c)),
            "model.n_courses": (model.n_courses, n_c),
        }
        bad = {k: v for k, v in shapes.items() if v[0] != v[1]}
        if id_rows and n_l < model.n_learners:  # the map starts with the model's ID rows
            bad["model.n_learners (learner ID embeddings)"] = (model.n_learners, f"<= {n_l}")
        if bad:
            raise ValueError(
                f"shapes disagree with the id maps ({n_l:,} learners, {n_c:,} courses): "
                + "; ".join(f"{k} is {got}, expected {want}" for k, (got, want) in bad.items())
            )
        if snapshot.cutoff is not None and not _is_utc(snapshot.cutoff):
            # naive = UTC (as `at` reads a cutoff): `at` compares cutoffs, `save` writes them
            cut = serving.as_cutoff(snapshot.cutoff, "snapshot.cutoff")
            snapshot = dataclasses.replace(snapshot, cutoff=cut)  # the caller's is left as is
        if model_cutoff is not None:
            model_cutoff = serving.as_cutoff(model_cutoff, "model_cutoff")
        self.model, self.snapshot, self.inputs = model, snapshot, inputs
        self.learner_ids, self.course_ids = learner_ids, course_ids
        self.content, self.normalize, self.cold_start = content, normalize, cold_start
        self.model_cutoff = snapshot.cutoff if model_cutoff is None else model_cutoff
        self.device = resolve_device(device)
        # >= 1: a chunk loop over range(0, n, 0 or -1) runs no chunk (garbage results)
        self.chunk_size = positive_int("chunk_size", chunk_size)
        self.serving_report: dict[str, Any] | None = None  # what `at` dropped; None otherwise
        self.format_version: int | None = None  # set by `load`: the folder's format version
        self._placed_model()
        self._history = normalize_rows(snapshot.history, normalize)
        # Course vectors, computed once per state of the model's weights (`_weights_key`:
        # further training or load_state_dict changes it), and the scoring items from them.
        self._courses: torch.Tensor | None = None
        self._courses_key: tuple | None = None
        self._items_of: tuple[torch.Tensor, torch.Tensor] | None = None  # (courses, items)
        # how recommend / recommend_table search (None: exact); fitted indexes per method,
        # over the current course vectors (dropped when they are recomputed)
        self._indexes: dict[str, ItemIndex] = {}
        self.retrieval = retrieval

    # ---- embeddings -------------------------------------------------------------------------
    def _placed_model(self) -> TwoTower | TwoTowerEnsemble:
        """The model on this recommender's device and in eval mode, as every scoring path needs
        it. Recommenders may share one model (`at`, a copy with other serving options, one per
        device) and `.to` moves it in place: without this, the last one built would leave the
        others indexing a model on another device (or, after further training, in train mode:
        dropout in the scores). A move changes the weights' storage, so the course vectors
        are recomputed (`_weights_key`)."""
        p = next(self.model.parameters(), None)
        if p is not None and not _same_device(p.device, self.device):
            with torch.inference_mode(False):  # real parameters, even from an inference path
                self.model.to(self.device)
        if self.model.training:
            self.model.eval()
        return self.model

    def _weights_key(self) -> tuple | None:
        """What identifies the model's current weights without reading them: per parameter and
        buffer its storage, dtype, device and version counter (bumped by every in-place
        change: an optimizer step, load_state_dict, a no_grad edit). None: a tensor keeps no
        version counter (created in inference mode), so nothing computed from it is kept."""
        key = []
        for t in (*self.model.parameters(), *self.model.buffers()):
            if t.is_inference():
                return None
            key.append((t.data_ptr(), t.dtype, t.device, t._version))
        return tuple(key)

    @torch.no_grad()  # not inference_mode: the vectors keep a version counter (ncf.ann memo)
    def course_embeddings(self, *, with_bias: bool = True) -> torch.Tensor:
        """(n_courses, d) on the device, computed once per state of the model's weights (again
        after further training or load_state_dict; an approximate index fitted on the old
        vectors is dropped with them); with a course bias, its column is last
        (`with_bias=False` drops it, e.g. for plots and neighbour searches)."""
        self._placed_model()
        key = self._weights_key()
        if self._courses is None or key is None or key != self._courses_key:
            dev = self.device
            content = None if self.content is None else csr_bags(self.content).to(dev)
            # plain tensors even when called in inference mode (score, score_stats), so the
            # vectors and the items made from them have a version counter
            with torch.inference_mode(False), torch.no_grad():
                self._courses = self.model.courses(
                    csr_bags(self.snapshot.course_bags).to(dev),
                    torch.arange(self.model.n_courses, device=dev),
                    content,
                )
            self._courses_key = key
            self._indexes.clear()  # fitted on the old vectors
        if not with_bias and self.model.course_bias is not None:
            return self._courses[:, :-1]
        return self._courses

    def learner_embeddings(self, learner_ids: Sequence[Any]) -> torch.Tensor:
        """(n, d) on the device for caller ids (unknown ones follow `cold_start`)."""
        return self.learner_embeddings_at(self._learner_index(learner_ids))

    @torch.inference_mode()
    def learner_embeddings_at(self, learner_idx: np.ndarray) -> torch.Tensor:
        """(n, d) on the device for dense learner indices; index -1 = an empty history (and,
        with learner ID embeddings, no ID row: a zero ID vector, see `TwoTower.learners`).
        With learner ID embeddings, index i < model.n_learners is ID row i; the learners
        after them (new since training, see `at`) have none: their history, zero ID vector."""
        learner_idx = np.asarray(learner_idx, dtype=np.int64)
        self._placed_model()
        out = []
        for start in range(0, len(learner_idx), self.chunk_size):
            part = learner_idx[start : start + self.chunk_size]
            # An unknown learner (-1) gets an empty bag: its row of the history is zeroed.
            rows = serving.rows_or_empty(self._history, part)
            rows.eliminate_zeros()
            id_row = np.where(part < self.model.n_learners, part, -1)  # -1: no ID row
            ids = torch.from_numpy(id_row).to(self.device)
            out.append(self.model.learners(csr_bags(rows.tocsr()).to(self.device), ids))
        d = self.model.embedding_dim + (self.model.course_bias is not None)
        return torch.cat(out) if out else torch.zeros(0, d, device=self.device)

    def known_learners(self, learner_ids: Sequence[Any]) -> np.ndarray:
        """(n,) bool: which ids this recommender has a row for (the others are cold starts)."""
        return serving.index_of(self.learner_ids, learner_ids, "learner_ids", strict=False) >= 0

    def history_sizes(self, learner_ids: Sequence[Any]) -> np.ndarray:
        """(n,) int64: courses in each learner's input history (the lookback window before the
        cutoff); 0 for a learner without one or unknown to this recommender. A learner with 0
        is served the empty-history prior, which the blender's fallback chain replaces.
        A model without a history input (pure ID embeddings: MF) serves a learner without an
        ID row (new since training) that prior whatever it watched: 0 for it too."""
        idx = serving.index_of(self.learner_ids, learner_ids, "learner_ids", strict=False)
        sizes = np.diff(self.snapshot.history.indptr).astype(np.int64)  # (n_learners,)
        tower = self.model.learner_tower
        if tower.bag is None and tower.ids is not None:
            sizes[self.model.n_learners :] = 0  # no ID row, no history input: the prior
        return np.where(idx >= 0, sizes[np.maximum(idx, 0)], 0)

    def known_courses(self, course_ids: Sequence[Any]) -> np.ndarray:
        """(n,) bool: which course ids the model knows (only those can be scored)."""
        return serving.index_of(self.course_ids, course_ids, "course_ids", strict=False) >= 0

    def _learner_index(self, learner_ids: Sequence[Any], what: str = "learner_ids") -> np.ndarray:
        strict = self.cold_start == "error"
        return serving.index_of(self.learner_ids, learner_ids, what, strict=strict)

    # Scoring vectors: the model's score is queries @ items.T exactly (TwoTower.score).
    # Both are checked finite here, so every scoring path (recommend, score, score_stats)
    # refuses a model whose weights went NaN instead of returning NaN scores.
    def _queries(self, learner_idx: np.ndarray) -> torch.Tensor:
        q = self.learner_embeddings_at(learner_idx)  # (c, d)
        if self.model.score_kind == "cosine":
            q = self.model.normalize(q) / self.model.temperature

        def learners(rows: np.ndarray) -> list:
            idx = learner_idx[rows]
            return [self.learner_ids.index[i] if i >= 0 else "<unknown learner>" for i in idx]

        return check_finite("learner embeddings", q, learners)

    def _items(self) -> torch.Tensor:
        """(n_courses, d) the scoring items, one tensor per state of the course vectors (so a
        fitted index checks them once, `ItemIndex.check_items`)."""
        courses = self.course_embeddings()  # recomputed when the weights changed
        if self._items_of is None or self._items_of[0] is not courses:
            with torch.inference_mode(False), torch.no_grad():  # as course_embeddings
                items = self.model.normalize(courses)  # (n_courses, d)
            check_finite("course embeddings", items, self.course_ids.to_ids)
            self._items_of = (courses, items)
        return self._items_of[1]

    def _seen_rows(self, learner_idx: np.ndarray) -> sp.csr_matrix:
        """(c, n_courses) courses watched before the cutoff; unknown learners (-1): none."""
        rows = serving.rows_or_empty(self.snapshot.seen, learner_idx)
        rows.eliminate_zeros()  # a stored zero is not a watch (as the diagonal product had it)
        return rows

    # ---- retrieval ----------------------------------------------------------------------------
    def recommend(
        self,
        learner_ids: Sequence[Any],
        N: int = 10,
        *,
        filter_already_watched: bool = True,
        candidates: Sequence[Any] | pd.DataFrame | None = None,
        method: str | ItemIndex | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-N courses per learner, best first: (ids (n, N), scores (n, N) float32).

        filter_already_watched: drop every course the learner watched before the snapshot's
          cutoff (`snapshot.seen`), not just the lookback window.
        candidates: course ids to choose from, either one list for every learner, or a long
          DataFrame with `learner_id` and `course_id` columns (each learner's allowed
          courses; a learner without rows has none; rows of learners not asked for are
          ignored with a WARNING, and a table with none asked for raises, see
          `serving.candidate_rows`). Exclusion applies on top.
        method: 'exact' | 'hnsw' | 'ivf', or None (default): `self.retrieval` (None: exact).
          An approximate index is built once per recommender and method (see `ncf.ann`);
          evaluation always passes 'exact'. An `ItemIndex` is searched as given (fitted on
          this recommender's course vectors, or fitted for the call; to build one once and
          keep it, set `retrieval` instead).
        Rows with fewer than N allowed courses are padded with None ids and -inf scores (the
        id array is then of object dtype); `recommend_table` gives the ragged table instead.
        """
        N = serving.check_n(N)
        idx = self._learner_index(learner_ids)
        cand = self._candidates(candidates, learner_ids)
        top = np.empty((idx.size, N), np.int64)  # filled chunk by chunk: no concatenated copy
        scores = np.empty((idx.size, N), np.float32)
        for lo, t, s in self._ranked(idx, N, filter_already_watched, cand, method):
            top[lo : lo + len(t)], scores[lo : lo + len(t)] = t, s
        return self._to_ids(top), scores

    def recommend_table(
        self,
        learner_ids: Sequence[Any],
        N: int | None = 10,
        *,
        filter_already_watched: bool = True,
        candidates: Sequence[Any] | pd.DataFrame | None = None,
        prefix: str = "ncf",
        method: str | ItemIndex | None = None,
    ) -> pd.DataFrame:
        """`recommend` as the long candidate table (`watchlog.candidates`): columns
        learner_id, course_id, `<prefix>_score` (float64: the float32 score, exactly) and
        `<prefix>_rank` (int64, 1 = best). Ragged: a learner with fewer allowed courses than N
        has fewer rows (none when nothing is allowed), never padding; learners' rows are
        contiguous, in the given order, best first; ids keep their id map's dtype.
        N=None: every allowed course (with per-learner candidates: all of each learner's).
        learner_ids must be unique (a repeated learner would repeat its pairs).
        method: as in `recommend` (None: `self.retrieval`).
        """
        N = serving.check_n(N, allow_none=True)
        index = serving.as_index(learner_ids, "learner_ids")
        dup = index.duplicated()
        if dup.any():
            raise ValueError(
                f"learner_ids: must be unique for a table (each pair appears once); "
                f"{int(dup.sum()):,} repeat an earlier id (e.g. {index[dup][:5].tolist()})"
            )
        idx = self._learner_index(index)
        cand = self._candidates(candidates, index)
        chunks = self._ranked(idx, N, filter_already_watched, cand, method)  # one by one
        learners = serving.caller_ids(index, self.learner_ids, idx)
        return serving.long_table(learners, self.course_ids.index, chunks, prefix)

    def _candidates(self, candidates: Any, learner_ids: Sequence[Any]) -> Any:
        """None, (k,) int64 course indices (one set for all), or CSR (n, n_courses) per learner."""
        if candidates is None:
            return None
        if isinstance(candidates, pd.DataFrame):
            return serving.candidate_rows(candidates, learner_ids, self.course_ids)
        return serving.index_of(self.course_ids, candidates, "candidates")

    @property
    def retrieval(self) -> ItemIndex | None:
        """The approximate search settings recommend / recommend_table use (None: exact)."""
        return self._retrieval

    @retrieval.setter
    def retrieval(self, value: ItemIndex | None) -> None:
        # a copy (the caller's object may change), and the fitted indexes dropped: an index
        # built with the old settings (nprobe, efSearch) must not keep serving
        self._retrieval = None if value is None else value.clone()
        self._indexes.clear()

    @property
    def retrieval_method(self) -> str:
        """'exact', 'hnsw' or 'ivf': how recommend / recommend_table search by default."""
        return "exact" if self.retrieval is None else self.retrieval.method

    def _index(self, method: str | ItemIndex | None) -> str | ItemIndex:
        """'exact', or the approximate index of `method` over this recommender's courses
        (built on first use; the settings of `self.retrieval` when it is of that method).
        An `ItemIndex` is the caller's: a fitted one is searched as is (it must be fitted on
        this recommender's course vectors), an unfitted one is fitted for this call only."""
        items = self._items()  # first: new course vectors drop the indexes fitted on old ones
        if isinstance(method, ItemIndex):  # the caller's index: used as is once fitted
            return method if method.fitted else method.clone().fit(items)
        method = self.retrieval_method if method is None else check_method(method)
        if method == "exact":
            return "exact"
        if method not in self._indexes:
            same = self.retrieval is not None and self.retrieval.method == method
            index = self.retrieval.clone() if same else ItemIndex(method)
            self._indexes[method] = index.fit(items)
        return self._indexes[method]

    def _ranked(
        self,
        idx: np.ndarray,
        N: int | None,
        filter_already_watched: bool,
        candidates: Any,
        method: str | ItemIndex | None = None,
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, top (c, N) course indices, scores (c, N)) per chunk of learners."""
        index = self._index(method)
        items = self._items()  # (n_courses, d)
        for lo in range(0, len(idx), self.chunk_size):
            part = idx[lo : lo + self.chunk_size]  # (c,)
            exclude = self._seen_rows(part) if filter_already_watched else None
            cand = candidates
            if sp.issparse(candidates):
                cand = candidates[lo : lo + len(part)]  # (c, n_courses)
            n = N if N is not None else serving.allowed_count(cand, len(self.course_ids))
            top, scores = top_k_by_dot(
                self._queries(part), items, n, exclude=exclude, candidates=cand,
                chunk_size=self.chunk_size, device=self.device, method=index,
            )  # fmt: skip
            yield lo, top, scores

    def similar_courses(
        self, course_ids: Sequence[Any], N: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """The N most cosine-similar courses to each given course (itself excluded)."""
        idx = serving.index_of(self.course_ids, course_ids, "course_ids")
        top, scores = similar_by_cosine(self.course_embeddings(with_bias=False), idx, N)
        return self._to_ids(top), scores

    def _to_ids(self, top: np.ndarray) -> np.ndarray:
        if (top >= 0).all():
            return self.course_ids.to_ids(top)
        out = np.full(top.shape, None, dtype=object)
        out[top >= 0] = self.course_ids.to_ids(top[top >= 0])
        return out

    # ---- scores of given pairs -----------------------------------------------------------------
    def score(self, learner_ids: Sequence[Any], course_ids: Sequence[Any]) -> np.ndarray:
        """(n,) float32 model scores of the pairs (learner_ids[i], course_ids[i]): the score
        `recommend` ranks by. Unknown learners follow `cold_start`; unknown courses raise
        `UnknownIdError`. Costs one (block, n_courses) matmul per block of distinct learners
        (at most SCORE_BLOCK scores, so memory does not grow with the learners), the product
        `recommend` ranks by; courses already watched are scored like any other."""
        n_l = len(serving.as_index(learner_ids, "learner_ids"))
        n_c = len(serving.as_index(course_ids, "course_ids"))
        if n_l != n_c:
            raise ValueError(
                f"learner_ids and course_ids: one pair per position, so the same length; "
                f"got {n_l:,} learner ids and {n_c:,} course ids"
            )
        lidx = self._learner_index(learner_ids)
        cidx = serving.index_of(self.course_ids, course_ids, "course_ids")
        return self._score_index(lidx, cidx)

    def _score_rows(self) -> int:
        """Learners per block of `score` / `score_stats`: at most SCORE_BLOCK scores (and
        chunk_size learners), at least one learner."""
        return max(1, min(self.chunk_size, SCORE_BLOCK // max(1, len(self.course_ids))))

    def _score_blocks(self, learner_idx: np.ndarray) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, (b, n_courses) float32 scores) for the learners `learner_idx`, in
        blocks of `_score_rows()` learners. The learner vectors are computed per chunk of
        chunk_size learners, as before and as `recommend` does (a chunk's vectors are small),
        and each block's rows of them multiplied by the items: a block's scores are the same
        numbers whatever the block size."""
        item_t = self._items().to(torch.float32).T.contiguous()  # (d, n_courses), as top_k
        block = self._score_rows()
        for lo in range(0, len(learner_idx), self.chunk_size):
            q = self._queries(learner_idx[lo : lo + self.chunk_size]).to(torch.float32)
            for b in range(0, q.shape[0], block):
                yield lo + b, q[b : b + block] @ item_t  # (b, n_courses) fresh buffer

    @torch.inference_mode()
    def _score_index(self, lidx: np.ndarray, cidx: np.ndarray) -> np.ndarray:
        out = np.empty(len(lidx), dtype=np.float32)
        if not len(lidx):
            return out
        learners, inv = np.unique(lidx, return_inverse=True)  # (u,), (n,) pair -> learner
        order = np.argsort(inv, kind="stable")  # pairs grouped by learner
        bounds = np.concatenate([[0], np.cumsum(np.bincount(inv, minlength=len(learners)))])
        for lo, s in self._score_blocks(learners):  # s: (b, n_courses)
            pairs = order[bounds[lo] : bounds[lo + s.shape[0]]]  # (p,) these learners' pairs
            rows = torch.from_numpy(inv[pairs] - lo).to(self.device)
            cols = torch.from_numpy(cidx[pairs]).to(self.device)
            out[pairs] = s[rows, cols].cpu().numpy()
        return out

    def score_table(
        self, frame: pd.DataFrame, *, prefix: str = "ncf", unknown: str = "error"
    ) -> pd.DataFrame:
        """A copy of the long table `frame` (learner_id, course_id, ...) with `<prefix>_score`
        (float64) added, row order kept. unknown="error": unknown courses (and learners, under
        cold_start='error') raise; "nan": such pairs get NaN (the contract's marker for a pair
        a model could not score: validate with allow_nan=[f"{prefix}_score"])."""
        if unknown not in _UNKNOWN_PAIRS:
            raise ValueError(f"unknown: must be one of {_UNKNOWN_PAIRS}, got {unknown!r}")
        absent = [c for c in (LEARNER, COURSE) if c not in frame.columns]
        if absent:
            raise CandidateError(
                f"frame: column(s) {absent} missing; score_table needs {[LEARNER, COURSE]}, "
                f"the table has {list(frame.columns)}"
            )
        if unknown == "error":
            scores = self.score(frame[LEARNER], frame[COURSE]).astype(np.float64)
            return frame.assign(**{f"{prefix}_score": scores})
        lidx = serving.index_of(self.learner_ids, frame[LEARNER], "frame.learner_id", strict=False)
        cidx = serving.index_of(self.course_ids, frame[COURSE], "frame.course_id", strict=False)
        cold = self.cold_start == "empty_history"  # unknown learners: empty history, no ID row
        ok = (cidx >= 0) & ((lidx >= 0) | cold)  # (n,) pairs the model can score
        scores = np.full(len(frame), np.nan)
        scores[ok] = self._score_index(lidx[ok], cidx[ok])
        return frame.assign(**{f"{prefix}_score": scores})

    @torch.inference_mode()
    def score_stats(self, learner_ids: Sequence[Any], *, prefix: str = "ncf") -> pd.DataFrame:
        """Per learner, over the whole catalogue (every course, watched ones included, no
        candidates): `<prefix>_mean`, `<prefix>_std` (population, ddof 0) and
        `<prefix>_logsumexp` of its scores, float64, one row per given id in order. For a
        per-learner z-score (s - mean) / std or log-softmax s - logsumexp. One float32
        matmul per block of learners (at most SCORE_BLOCK scores: memory does not grow with
        the learners asked for); the statistics are accumulated in float64."""
        idx = self._learner_index(learner_ids)
        parts = [serving.score_moments(s) for _, s in self._score_blocks(idx)]  # 3 x (b,) each
        mean, std, lse = (
            np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(3)
        )
        return pd.DataFrame(
            {
                LEARNER: serving.caller_ids(learner_ids, self.learner_ids, idx),
                f"{prefix}_mean": mean,
                f"{prefix}_std": std,
                f"{prefix}_logsumexp": lse,
            }
        )

    # ---- another log, a later cutoff ----------------------------------------------------------
    def at(
        self,
        log: EventLog,
        cutoff: Any,
        *,
        allow_earlier: bool = False,
        report: DataReport | None = None,
    ) -> NCFRecommender:
        """A recommender sharing this model whose snapshot is rebuilt from `log` (cleaned: it
        has the `watched` column) with the saved input settings, from events strictly before
        `cutoff` (a timestamp; naive = UTC).

        The log's ids may differ from the model's: its courses are mapped into the model's
        course index by id, and courses the model does not know are left out of histories,
        `seen` and co-watch bags (counted in the new recommender's `serving_report`, warned
        about, and noted in `report` when given). Learners: the new recommender serves the
        log's learners, those new since training from their history alone. With learner ID
        embeddings its learner map is the model's learners (their ID rows, indices unchanged;
        those absent from the log have an empty history) followed by the log's others, which
        have no ID row: their ID vector is zero, so a hybrid (history bag + IDs) serves them
        from their history; a pure-ID model (no history input) can only serve them the
        cold-start list (its `history_sizes` are 0, and a warning counts their watches).
        `serving_report["new_learners"]` counts the log's learners without a row (ID row).
        The log's ids must be of the model's kinds (text or integer, per map): another kind
        is a TypeError naming `log.learner_ids` / `log.course_ids`, both dtypes and examples.
        Ids in neither the model nor the log are unknown: `UnknownIdError` under
        cold_start="error", the cold-start list under "empty_history".
        A cutoff before `model_cutoff` raises unless `allow_earlier` (the model was trained
        on labels after it: a leak for any evaluation there).
        """
        if self.inputs is None:
            raise ValueError(
                "at(): this recommender has no input settings (`inputs`, the InputBuilder "
                "that made its snapshots): it was saved without input settings (a folder from "
                f"before format_version {FORMAT_VERSION}) or built without inputs=. Re-save it: "
                "set rec.inputs = InputBuilder(...) as trained (conf/ncf/*.yaml `inputs`), then "
                "rec.save(folder)"
            )
        # Ids of another kind (integer learner ids in the log, text ones in the model) never
        # match: every learner would be new, every course unknown, without saying why.
        self.learner_ids.check_kind(log.learner_ids.index, "log.learner_ids")
        self.course_ids.check_kind(log.course_ids.index, "log.course_ids")
        cutoff = serving.as_cutoff(cutoff)
        if self.model_cutoff is not None and cutoff < self.model_cutoff and not allow_earlier:
            raise ValueError(
                f"cutoff: {cutoff} is before the model's training cutoff {self.model_cutoff}; "
                "the model was trained on labels after it, so its scores there leak the future "
                "(pass allow_earlier=True to serve there anyway, e.g. for a diagnostic)"
            )
        snap, learner_ids, out = serving.snapshot_at(self, log, cutoff, report)
        rec = NCFRecommender(
            self.model, snap, learner_ids, self.course_ids,
            inputs=self.inputs, content=self.content, normalize=self.normalize,
            cold_start=self.cold_start, device=self.device, chunk_size=self.chunk_size,
            retrieval=self.retrieval,  # settings only: its courses' co-watch bags differ
        )  # fmt: skip
        rec.model_cutoff = self.model_cutoff  # the model's, not the new snapshot's
        rec.serving_report = out
        return rec

    # ---- export and persistence --------------------------------------------------------------
    def export_embeddings(self, directory: str | os.PathLike) -> dict[str, Path]:
        """learners.parquet and courses.parquet: caller id + `embedding` (fixed-size float32 list).

        The dot product of a learner's and a course's vectors is the model's score: with a
        course bias, the course vector's last entry is the bias and the learner's is 1 (for a
        cosine model the raw tower outputs are written: normalize both, divide by the
        temperature)."""
        directory = Path(directory)
        learners = self.learner_embeddings_at(np.arange(len(self.learner_ids))).cpu().numpy()
        courses = self.course_embeddings().cpu().numpy()
        return {
            "learners": _write_embeddings(
                directory / "learners.parquet", self.learner_ids, learners
            ),
            "courses": _write_embeddings(directory / "courses.parquet", self.course_ids, courses),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Weights (torch state dict), config JSON (format_version, model, input settings,
        normalize, cold_start, chunk_size, content presence, cutoffs), id maps (Parquet),
        snapshot (npz): no pickle.
        The folder is replaced atomically."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, tmp / "weights.pt")
            write_json(
                tmp / "config.json",
                {
                    "format_version": FORMAT_VERSION,
                    "model": self.model.config,
                    "inputs": None if self.inputs is None else self.inputs.config,
                    "normalize": self.normalize,
                    "cold_start": self.cold_start,
                    "chunk_size": self.chunk_size,
                    "content": self.content is not None,
                    "cutoff": _when(self.snapshot.cutoff),
                    "model_cutoff": _when(self.model_cutoff),
                    "snapshot": self.snapshot.name,
                    "serving_report": self.serving_report,
                },
            )
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
        """A saved folder (any format_version up to FORMAT_VERSION). Folders without a
        format_version (1) load with inputs=None: they serve their snapshot, `at` raises."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"{directory}: no config.json; not a folder written by NCFRecommender.save"
            )
        config = read_folder_json(directory / "config.json")
        version = int(config.get("format_version", 1))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{directory}: saved with format_version {version}; this code reads up to "
                f"{FORMAT_VERSION} (update ncf-glmix)"
            )
        try:  # settings this code does not know (a newer or edited file): a named error
            model = model_from_config(config["model"])
            inputs = InputBuilder(**config["inputs"]) if config.get("inputs") is not None else None
            cutoff = pd.Timestamp(config["cutoff"]) if config["cutoff"] else None
            # absent from folders saved before it was: the default
            chunk_size = positive_int("chunk_size", config.get("chunk_size", _DEFAULT_CHUNK))
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptFolderError(
                f"{directory}/config.json: its model, inputs, cutoff or chunk_size settings cannot be read "
                f"by this code ({type(err).__name__}: {err})"
            ) from err
        try:
            state = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as err:  # a damaged file: RuntimeError, UnpicklingError, EOFError...
            raise CorruptFolderError(
                f"{directory}/weights.pt: does not fit the model config.json describes, or "
                f"is damaged ({str(err).splitlines()[0]})"
            ) from err
        parts = {p: sp.load_npz(directory / f"{p}.npz").tocsr() for p in _SNAPSHOT_PARTS}
        snapshot = Snapshot(config["snapshot"], cutoff=cutoff, **parts)
        content_path = directory / "content.npz"
        if version >= 2 and bool(config["content"]) != content_path.exists():
            raise ValueError(
                f"{directory}: config.json says content={config['content']} but content.npz "
                f"is {'present' if content_path.exists() else 'missing'}: the folder is incomplete"
            )
        model_cutoff = config.get("model_cutoff", config["cutoff"])
        rec = cls(
            model, snapshot,
            IdMap.load(directory / "learner_ids.parquet"), IdMap.load(directory / "course_ids.parquet"),
            inputs=inputs,
            content=sp.load_npz(content_path).tocsr() if content_path.exists() else None,
            normalize=config["normalize"], cold_start=config["cold_start"], device=device,
            model_cutoff=pd.Timestamp(model_cutoff) if model_cutoff else None,
            chunk_size=chunk_size,
        )  # fmt: skip
        rec.serving_report = config.get("serving_report")
        rec.format_version = version  # the version the folder was written with
        return rec


def _is_utc(t: Any) -> bool:
    return isinstance(t, pd.Timestamp) and t.tzinfo is not None and str(t.tzinfo) == "UTC"


def _when(t: pd.Timestamp | None) -> str | None:
    return None if t is None else str(t)


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


def _same_device(a: torch.device, b: torch.device) -> bool:
    """cuda and cuda:0 are one device when 0 is the current one (`.to("cuda")` puts tensors on
    cuda:<current>, whose device then compares unequal to torch.device("cuda"))."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return a.index is None or b.index is None or a.index == b.index
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)
