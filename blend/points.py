"""Scored candidates at one cutoff: retrieval, both models' scores and the blend features.

    builder = CandidateBuilder(n_retrieve=200, n_fallback=20, popularity_days=90)
    table = builder.build(learner_ids, log=log, fold=split.test, retriever=rec, scorer=glmix)
    for chunk in builder.chunks(learner_ids, ..., learners_per_chunk=20_000): ...

A fold (`watchlog.splits.Fold`) says what is known: its inputs are what the learners had
watched (never in a list) and what popularity is counted on (the last `popularity_days`
before a temporal fold's cutoff; all inputs of a random / stratified fold, which has none).
The retriever must serve those inputs: one whose snapshot is another (a later cutoff, other
watched pairs), or a model trained on events after a temporal fold's cutoff (the two-tower's
`model_cutoff`, GLMix's `trained_through`: it learned the window's labels, even when its
snapshot is moved back with `rec.at(..., allow_earlier=True)`), is refused with a
LeakageError (`check_serves_fold`). Every `build` is checked, also one given a `context`: the
context records the models it has checked, so a chunked build checks them once.

The table holds, per candidate: the retrieval columns (`blend.candidates`), GLMix's logit and
components (when a scorer is given), the features (`blend.features`), the learner's segment,
and per learner (repeated on its rows) `has_history` and `known_to_glmix`, which the fallback
chain reads. Models are reached only through these methods (what `NCFRecommender` and
`glmix.GLMixScorer` provide):

    retriever.recommend_table(learner_ids, N, filter_already_watched=True) -> long table
    retriever.score(learner_ids, course_ids) -> (n,) scores
    retriever.score_stats(learner_ids) -> learner_id, ncf_mean, ncf_std, ncf_logsumexp
    retriever.history_sizes(learner_ids) -> (n,) courses in each learner's input history
    scorer.score_candidates(table, learners=..., courses=...) -> table + glmix_* columns
    scorer.known("learner", learner_ids) -> (n,) bool
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import clone

from blend.candidates import as_learner_ids, build_candidates, seen_in, unique_learner_ids
from blend.features import add_features, zscore_within_learner
from blend.item_item import ItemItem, LearnerLearner
from blend.popularity import Popularity
from watchlog import EventLog
from watchlog.candidates import COURSE, LEARNER, validate_candidates
from watchlog.eventlog import utc_timestamp
from watchlog.splits import Fold, LeakageError

__all__ = ["CandidateBuilder", "FoldContext", "check_serves_fold"]


@dataclass(frozen=True)
class FoldContext:
    """What every chunk of a fold shares, made by `CandidateBuilder.context` for one fold."""

    seen: sp.csr_matrix  # (n_learners, n_courses) 1 = watched in the fold's inputs
    popularity: Popularity
    item_item: ItemItem | None  # fitted on `seen`, when the builder has one
    learner_learner: LearnerLearner | None = None  # likewise
    fold: Fold | None = field(default=None, compare=False, repr=False)  # the one it was made for
    # (retriever, its snapshot, scorer) already checked against `fold`: the check (a sparse
    # comparison of the whole snapshot) runs once per fold and models, not once per chunk
    checked: list = field(default_factory=list, compare=False, repr=False)

    def check_serves(self, retriever: Any, scorer: Any, log: EventLog, fold: Fold) -> None:
        """`check_serves_fold` unless these models were already checked for this fold; a
        context made for another fold is refused (its `seen` and popularity are another's)."""
        if self.fold is not None and self.fold is not fold:
            raise ValueError(
                f"context: made for the {self.fold.name} fold (cutoff {self.fold.cutoff}), "
                f"given with the {fold.name} fold (cutoff {fold.cutoff}): make it with "
                "builder.context(log, fold) for the fold being built"
            )
        models = (retriever, getattr(retriever, "snapshot", None), scorer)
        if any(all(a is b for a, b in zip(seen, models, strict=True)) for seen in self.checked):
            return
        check_serves_fold(retriever, log, fold, self.seen, scorer=scorer)
        self.checked.append(models)


class CandidateBuilder:
    """How candidates are gathered and described (explicit settings, see the module doc).

    n_retrieve: the two-tower's top-N per learner; n_fallback: popular courses added per
    learner (segment and language first, then global); popularity_days: the window of the
    popularity counts before the cutoff (None: everything before it); group_columns: the
    learner-table columns that define "popular in the learner's segment and language";
    item_item: an unfitted `ItemItem` (EASE), fitted on each fold's inputs, whose score of
    each candidate becomes `ease_score` and its per-learner z-score `ease_z` (None: none);
    learner_learner: an unfitted `LearnerLearner` (EASE with learners as the items), likewise
    -> `learner_ease_score` and `learner_ease_z` (None: none, the default)."""

    def __init__(
        self,
        n_retrieve: int = 200,
        n_fallback: int = 20,
        popularity_days: float | None = 90.0,
        group_columns: Sequence[str] = ("segment", "language"),
        item_item: ItemItem | None = None,
        learner_learner: LearnerLearner | None = None,
    ):
        self.n_retrieve = n_retrieve
        self.n_fallback = n_fallback
        self.popularity_days = popularity_days
        self.group_columns = group_columns
        self.item_item = item_item
        self.learner_learner = learner_learner

    def context(self, log: EventLog, fold: Fold) -> FoldContext:
        """What every chunk of a fold shares: seen in its inputs, popularity, the fitted
        closed-form scorers."""
        if fold.kind == "temporal":
            events, when = fold.lookback(self.popularity_days), fold.cutoff
        else:
            events, when = fold.inputs, fold.inputs["ts"].max()
        pop = Popularity.from_events(log, events, when, group_columns=self.group_columns)
        seen = seen_in(log, fold.inputs)
        item = None if self.item_item is None else clone(self.item_item).fit(seen)
        peers = None if self.learner_learner is None else clone(self.learner_learner).fit(seen)
        return FoldContext(seen, pop, item, peers, fold=fold)

    def build(
        self,
        learner_ids: Sequence[Any],
        *,
        log: EventLog,
        fold: Fold,
        retriever: Any,
        scorer: Any | None = None,
        context: FoldContext | None = None,
    ) -> pd.DataFrame:
        """The scored candidate table of `learner_ids` (one chunk; see `chunks`). The models
        are checked against the fold (`check_serves_fold`), always: a given `context` (from
        `context(log, fold)`) records the models it has checked, so chunks sharing it pay
        for the check once."""
        ctx = self.context(log, fold) if context is None else context
        ctx.check_serves(retriever, scorer, log, fold)
        pop = ctx.popularity
        ids = as_learner_ids(learner_ids, log)
        table = build_candidates(
            ids, retriever, log=log, seen=ctx.seen, popularity=pop,
            n_retrieve=self.n_retrieve, n_fallback=self.n_fallback,
        )  # fmt: skip
        if scorer is not None:
            table = scorer.score_candidates(table, learners=log.learners, courses=log.courses)
        stats = retriever.score_stats(ids)
        table = add_features(table, stats=stats, log=log, popularity=pop)
        closed_form = {"ease": ctx.item_item, "learner_ease": ctx.learner_learner}
        closed_form = {prefix: m for prefix, m in closed_form.items() if m is not None}
        if closed_form:
            learner = log.learner_ids.to_index(table[LEARNER], strict=False)  # -1: unknown
            course = log.course_ids.to_index(table[COURSE])
        for prefix, model in closed_form.items():
            table[f"{prefix}_score"] = model.score_pairs(ctx.seen, learner, course)
            table[f"{prefix}_z"] = zscore_within_learner(table, f"{prefix}_score")
        per_learner = pd.DataFrame(
            {
                "has_history": np.asarray(retriever.history_sizes(ids)) > 0,
                "known_to_glmix": (
                    np.asarray(scorer.known("learner", ids), dtype=bool)
                    if scorer is not None
                    else np.ones(len(ids), dtype=bool)
                ),
            },
            index=ids,
        )
        pos = ids.get_indexer(pd.Index(table[LEARNER]))
        for col in per_learner.columns:
            table[col] = per_learner[col].to_numpy()[pos]
        return validate_candidates(table, score_columns=["ncf_score"])

    def chunks(
        self,
        learner_ids: Sequence[Any],
        *,
        log: EventLog,
        fold: Fold,
        retriever: Any,
        scorer: Any | None = None,
        learners_per_chunk: int = 20_000,
    ) -> Iterator[pd.DataFrame]:
        """`build` for consecutive chunks of learners: memory bounded by the chunk."""
        ids = unique_learner_ids(learner_ids, log)  # `build` checks one chunk; this, all
        context = self.context(log, fold)
        context.check_serves(retriever, scorer, log, fold)  # once, before the first chunk
        for lo in range(0, len(ids), learners_per_chunk):
            yield self.build(
                ids[lo : lo + learners_per_chunk], log=log, fold=fold,
                retriever=retriever, scorer=scorer, context=context,
            )  # fmt: skip


def check_serves_fold(
    retriever: Any, log: EventLog, fold: Fold, seen: sp.csr_matrix, *, scorer: Any = None
) -> None:
    """Refuse models that would see the fold's labels (a LeakageError naming both sides):

    - a retriever whose snapshot is not the fold's inputs. A snapshot taken later holds the
      fold's labels among its inputs and leaves them out of its lists as already watched, so
      a blender would be fitted or judged on candidates without the fold's positives; an
      earlier one serves stale histories;
    - on a temporal fold, a retriever trained on events after the cutoff (`model_cutoff` later
      than it), or a scorer fitted on them (`trained_through` later than it): the model has
      learned the window's labels, whatever snapshot it serves (`rec.at(log, cutoff,
      allow_earlier=True)` moves the snapshot, not the weights).

    seen: the fold's (n_learners, n_courses) watched-in-inputs matrix (`seen_in`); a
    retriever without a `snapshot` (any object with the `Retriever` methods) is not checked
    for it, the watched pairs are compared only when its id maps are the log's (same rows),
    and a model without a training end (None, or no such attribute: e.g. a GLMix scorer
    saved before it recorded one) is not checked for that."""
    if fold.kind == "temporal":
        _check_trained_before(
            "the two-tower", getattr(retriever, "model_cutoff", None), "model_cutoff", fold
        )
        _check_trained_before(
            "the GLMix scorer", getattr(scorer, "trained_through", None), "trained_through", fold
        )
    snap = getattr(retriever, "snapshot", None)
    if snap is None:
        return
    cut = getattr(snap, "cutoff", None)
    later = fold.kind == "temporal" and cut is not None and cut != fold.cutoff
    same_rows = (
        getattr(retriever, "learner_ids", None) == log.learner_ids
        and getattr(retriever, "course_ids", None) == log.course_ids
    )
    other = same_rows and (snap.seen.astype(bool) != seen.astype(bool)).nnz
    if later or other:
        raise LeakageError(
            f"the two-tower scoring the {fold.name} window serves the snapshot at {cut} "
            f"({snap.seen.nnz:,} watched pairs), not the window's inputs (cutoff "
            f"{fold.cutoff}, {seen.nnz:,} watched pairs): its lists would hold the window's "
            "labels as already watched (or stale histories). Serve the fold's inputs: "
            "rec.at(log, fold.cutoff), or the model trained for that window"
        )


def _check_trained_before(model: str, trained_through: Any, attribute: str, fold: Fold) -> None:
    """LeakageError if a model's training data reach past the fold's cutoff (a naive time is
    read as UTC, as the events' own)."""
    if trained_through is None:
        return
    if utc_timestamp(trained_through) > utc_timestamp(fold.cutoff):
        raise LeakageError(
            f"{model} scoring the {fold.name} window was trained on events up to "
            f"{trained_through} ({attribute}), after the window's cutoff {fold.cutoff}: it has "
            "learned the window's labels (moving its snapshot earlier does not unlearn them). "
            "Use the model trained for that window (trained strictly before its cutoff)"
        )
