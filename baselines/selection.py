"""Baselines chosen on validation, then scored once on test, on the inputs a model sees.

A `Window` is one evaluation point: the input matrix a model is fitted on and scores from
(learner x course, binary), the truth (labels after it) and what is removed from the lists
(courses already watched). Give the baselines exactly the windows the two-tower gets (its
validation and test snapshots, `experiments.baselines.windows`) and their figures stand beside
its figures. A `Candidate` is a baseline and the grid of the one parameter chosen on
validation NDCG@10; `baseline_rows` runs the grid on validation, then one test evaluation of
the chosen value.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone

from baselines.base import Baseline
from baselines.ease_model import EASE
from baselines.item_knn import ItemKNN
from baselines.popularity import Popularity
from evaluation import RankingMetrics, evaluate_full_ranking

__all__ = ["EASE_L2", "KNN_K", "Candidate", "Window", "baseline_rows", "default_candidates"]

EASE_L2 = (100.0, 200.0, 500.0, 1000.0, 2000.0)
KNN_K = (20, 50, 100, 200)


@dataclass(frozen=True)
class Window:
    inputs: sp.csr_matrix  # (n_learners, n_courses) what the model is fitted on / scores from
    truth: sp.csr_matrix  # (n_learners, n_courses) labels
    exclude: sp.csr_matrix  # (n_learners, n_courses) removed from every list

    def evaluate(self, model, ks=(10,)) -> dict[str, float]:
        return self.evaluate_per_user(model, ks).summary()

    def evaluate_per_user(self, model, ks=(10,)) -> RankingMetrics:
        """Fit `model` on the inputs, rank for every learner with truth; per-user metrics."""
        model.fit(self.inputs)
        users = np.flatnonzero(np.diff(self.truth.indptr) > 0)
        return evaluate_full_ranking(
            model.score, self.truth, ks=ks, users=users, exclude=self.exclude
        )


@dataclass(frozen=True)
class Candidate:
    """A baseline (`estimator`, cloned for every fit) and the values of its parameter `param`
    tried on validation; param None: nothing to choose (values ignored)."""

    name: str
    estimator: Baseline
    param: str | None = None
    values: tuple = ()

    def __post_init__(self):
        if self.param is not None:
            if not self.values:
                raise ValueError(f"{self.name}: values of {self.param!r} to try: none given")
            if self.param not in self.estimator.get_params():
                raise ValueError(
                    f"{self.name}: {type(self.estimator).__name__} has no parameter "
                    f"{self.param!r}; its parameters: {sorted(self.estimator.get_params())}"
                )

    @property
    def grid(self) -> tuple:
        return (None,) if self.param is None else tuple(self.values)

    def make(self, value: Any) -> Baseline:
        model = clone(self.estimator)
        return model if self.param is None else model.set_params(**{self.param: value})


def default_candidates(
    ease_l2: Sequence[float] = EASE_L2, knn_k: Sequence[int] = KNN_K, ease: EASE | None = None
) -> list[Candidate]:
    """EASE (L2), item-kNN on co-watch cosine (k) and popularity, with the benchmarks' grids.
    ease: the EASE whose other settings (rank, max_dense_gib) to use; default EASE()."""
    return [
        Candidate("EASE", ease if ease is not None else EASE(), "l2", tuple(ease_l2)),
        Candidate("item-kNN (co-watch cosine)", ItemKNN(), "k", tuple(int(k) for k in knn_k)),
        Candidate("popularity", Popularity()),
    ]


def baseline_rows(
    valid: Window,
    test: Window,
    metrics: Sequence[str],
    per_user: dict[str, RankingMetrics] | None = None,
    candidates: Sequence[Candidate] | None = None,
) -> list[dict[str, Any]]:
    """Each candidate (default: `default_candidates()`): the value with the best validation
    NDCG@10 (the first of equals), then one test evaluation. A row: model (an EASE fitted in
    low rank says so), parameter, chosen, valid_ndcg@10, the test `metrics`, seconds.
    per_user: filled with each model's per-user test metrics, by model name (for paired
    comparisons)."""
    rows = []
    for cand in default_candidates() if candidates is None else candidates:
        start = time.perf_counter()
        scores = {v: valid.evaluate(cand.make(v))["ndcg@10"] for v in cand.grid}
        best = max(scores, key=scores.get)
        model = cand.make(best)
        tested = test.evaluate_per_user(model)
        name = cand.name
        if isinstance(model, EASE) and model.rank_ is not None:
            name = f"{name} ({model.form})"
        if per_user is not None:
            per_user[name] = tested
        res = tested.summary()
        rows.append(
            {"model": name, "chosen": best, "valid_ndcg@10": scores[best],
             **{m: res[m] for m in metrics}, "seconds": time.perf_counter() - start,
             "parameter": cand.param}
        )  # fmt: skip
    return rows
