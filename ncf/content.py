"""Course content features for the course tower: one sparse row per course.

    content = course_content(log.courses, categorical=("language", "category", "difficulty"),
                             multi_hot=("skills",), title_tfidf=2000)   # (n_courses, n_features)

Categorical and multi-hot columns go through `watchlog.features.FeatureEncoder` (the same
encoder GLMix uses, JSON-able state); the title through scikit-learn's `TfidfVectorizer`.
Each block's rows are scaled to sum to 1 so no block dominates the content bag by size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from ncf.inputs import normalize_rows
from watchlog.features import FeatureEncoder

__all__ = ["course_content"]


def course_content(
    courses: pd.DataFrame,
    *,
    categorical: Sequence[str] = ("language", "category"),
    multi_hot: Sequence[str] = (),
    title_column: str | None = None,
    title_tfidf: int = 0,
) -> sp.csr_matrix:
    """(n_courses, n_features) CSR float32; row i = course index i (the log's course table)."""
    blocks = []
    columns = [*categorical, *multi_hot]
    if columns:
        encoder = FeatureEncoder(categorical=tuple(categorical), multi_hot=tuple(multi_hot))
        blocks.append(encoder.fit_transform(courses))
    if title_tfidf:
        if title_column is None or title_column not in courses.columns:
            raise ValueError(
                f"title_column: {title_column!r} is not a courses column; have {list(courses.columns)}"
            )
        titles = courses[title_column].fillna("").astype(str).to_numpy()
        blocks.append(
            TfidfVectorizer(max_features=title_tfidf, dtype=np.float32).fit_transform(titles)
        )
    if not blocks:
        raise ValueError("course_content: no features requested")
    return sp.hstack(
        [normalize_rows(sp.csr_matrix(b, dtype=np.float32), "mean") for b in blocks]
    ).tocsr()
