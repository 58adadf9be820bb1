"""The candidate table contract (watchlog.candidates): what passes, and every rule's error."""

import numpy as np
import pandas as pd
import pytest

from watchlog.candidates import (
    CandidateError,
    id_column,
    learner_bounds,
    learner_chunks,
    sort_by_learner,
    validate_candidates,
)


def _table(**extra):
    return pd.DataFrame(
        {
            "learner_id": pd.array(["a", "a", "b", "c", "c", "c"], dtype="str"),
            "course_id": np.array([1, 2, 1, 3, 1, 2]),
            "score": np.array([0.5, 0.1, 0.3, 0.9, 0.2, 0.0]),
            **extra,
        }
    )


def test_a_valid_ragged_table_passes_and_is_returned_unchanged():
    t = _table()
    assert validate_candidates(t, score_columns=["score"]) is t
    assert learner_bounds(t).tolist() == [0, 2, 3, 6]
    assert [len(c) for c in learner_chunks(t, 2)] == [3, 3]
    assert learner_bounds(t.iloc[:0]).tolist() == [0]


def test_missing_columns_are_named():
    with pytest.raises(CandidateError, match=r"\['course_id', 'ncf'\] missing"):
        validate_candidates(_table().drop(columns="course_id"), score_columns=["ncf"])


def test_object_ids_and_missing_ids_are_refused():
    with pytest.raises(CandidateError, match="integer or string dtype, got object"):
        validate_candidates(_table().astype({"learner_id": object}))
    t = _table()
    t.loc[4, "learner_id"] = None
    with pytest.raises(
        CandidateError, match=r"must not be missing; 1 of 6 rows are \(e.g. rows \[4\]"
    ):
        validate_candidates(t)


def test_non_finite_scores_are_counted_with_examples_unless_nan_is_allowed():
    t = _table()
    t.loc[[1, 5], "score"] = [np.nan, np.inf]
    with pytest.raises(
        CandidateError, match=r"score: scores must be finite; 2 of 6 .*\('a', 2, nan\)"
    ):
        validate_candidates(t, score_columns=["score"])
    # NaN may be allowed for a column; infinity never
    with pytest.raises(CandidateError, match="1 of 6"):
        validate_candidates(t, score_columns=["score"], allow_nan=["score"])
    with pytest.raises(CandidateError, match="floating point, got int64"):
        validate_candidates(_table(rank=np.arange(6)), score_columns=["rank"])


def test_duplicate_pairs_and_split_learners_are_refused_and_sorting_fixes_the_split():
    t = _table()
    with pytest.raises(
        CandidateError, match=r"pair may appear once; 1 rows repeat one \(e.g. \[\('a', 1\)\]"
    ):
        validate_candidates(pd.concat([t, t.iloc[:1]], ignore_index=True))
    shuffled = t.iloc[[0, 3, 1, 2, 4, 5]].reset_index(drop=True)
    with pytest.raises(CandidateError, match="contiguous; 2 learner"):
        validate_candidates(shuffled)
    fixed = sort_by_learner(shuffled)
    validate_candidates(fixed)
    assert fixed["learner_id"].tolist() == ["a", "a", "c", "c", "c", "b"]
    assert fixed["course_id"].tolist() == [1, 2, 3, 1, 2, 1]  # order within a learner kept


def test_id_column_keeps_the_id_maps_dtype():
    index = pd.Index(["x", "y", "z"])
    col = id_column(index, np.array([2, 0]))
    assert list(col) == ["z", "x"] and not pd.api.types.is_object_dtype(col.dtype)
