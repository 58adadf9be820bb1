"""A retriever for blend tests: the platform's true affinity plus seeded noise, exposing the
methods `blend.points` reads (so the blend tests need no trained two-tower)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from watchlog.candidates import id_column


class NoisyTruthRetriever:
    def __init__(self, log, truth, noise: float = 1.0, seed: int = 0, no_history=()):
        self.log, self.truth, self.noise, self.seed = log, truth, noise, seed
        self.no_history = set(no_history)

    def _matrix(self, learner_ids) -> np.ndarray:
        """(n, n_courses) scores; a learner's noise depends on the seed and the learner only,
        so every method sees the same scores."""
        li = self.log.learner_ids.to_index(learner_ids, strict=False).astype(np.int64)
        m = self.truth.affinity_matrix(np.maximum(li, 0))
        for row, i in enumerate(li):  # a test helper: a few hundred learners at most
            m[row] += np.random.default_rng([self.seed, int(i) + 1]).normal(
                0, self.noise, m.shape[1]
            )
        return m

    def recommend_table(self, learner_ids, N, *, filter_already_watched=True):
        ids = pd.Index(learner_ids)
        m = self._matrix(ids)
        top = np.argsort(-m, axis=1, kind="stable")[:, :N]
        rows = np.repeat(np.arange(len(ids)), top.shape[1])
        return pd.DataFrame(
            {
                "learner_id": ids.take(rows).array,
                "course_id": id_column(self.log.course_ids.index, top.ravel()),
                "ncf_score": np.take_along_axis(m, top, axis=1).ravel(),
                "ncf_rank": np.tile(np.arange(1, top.shape[1] + 1), len(ids)),
            }
        )

    def score(self, learner_ids, course_ids):
        ids = pd.Index(learner_ids)
        uniq, inv = np.unique(np.asarray(ids.astype(str)), return_inverse=True)
        m = self._matrix(pd.Index(uniq))
        ci = self.log.course_ids.to_index(course_ids).astype(np.int64)
        return m[inv, ci]

    def known_courses(self, course_ids):
        return self.log.course_ids.to_index(course_ids, strict=False) >= 0

    def score_stats(self, learner_ids):
        ids = pd.Index(learner_ids)
        m = self._matrix(ids)
        top = m.max(axis=1, keepdims=True)
        return pd.DataFrame(
            {
                "learner_id": ids.array,
                "ncf_mean": m.mean(axis=1),
                "ncf_std": m.std(axis=1),
                "ncf_logsumexp": (top + np.log(np.exp(m - top).sum(axis=1, keepdims=True))).ravel(),
            }
        )

    def history_sizes(self, learner_ids):
        known = self.log.learner_ids.to_index(learner_ids, strict=False) >= 0
        mine = np.array([i not in self.no_history for i in pd.Index(learner_ids)], dtype=bool)
        return np.where(known & mine, 5, 0)
