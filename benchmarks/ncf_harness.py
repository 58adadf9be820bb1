"""What the NCF benchmarks share: closed-form baselines chosen on validation, scored on test.

A `Window` is one evaluation point: the input matrix a model is fitted on and scores from
(learner x course, binary), the truth (labels after it) and what is excluded from the lists
(courses already watched). Baselines get exactly the windows the two-tower gets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.baselines import EASE, ItemKNN, Popularity
from evaluation import RankingMetrics, evaluate_full_ranking

__all__ = ["Window", "baseline_rows", "EASE_L2", "KNN_K"]

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


def baseline_rows(
    valid: Window,
    test: Window,
    metrics: Sequence[str],
    per_user: dict[str, RankingMetrics] | None = None,
) -> list[dict[str, Any]]:
    """EASE (L2), item-kNN on co-watch cosine (k) and popularity: the parameter with the best
    validation NDCG@10, then one test evaluation. per_user: filled with each model's per-user
    test metrics, by model name (for paired comparisons)."""
    rows = []
    for name, grid, make in (
        ("EASE", EASE_L2, lambda v: EASE(l2=v)),
        ("item-kNN (co-watch cosine)", KNN_K, lambda v: ItemKNN(k=v)),
        ("popularity", (None,), lambda v: Popularity()),
    ):
        start = time.perf_counter()
        scores = {v: valid.evaluate(make(v))["ndcg@10"] for v in grid}
        best = max(scores, key=scores.get)
        tested = test.evaluate_per_user(make(best))
        if per_user is not None:
            per_user[name] = tested
        res = tested.summary()
        rows.append(
            {"model": name, "chosen": best, "valid_ndcg@10": scores[best],
             **{m: res[m] for m in metrics}, "seconds": time.perf_counter() - start}
        )  # fmt: skip
    return rows
