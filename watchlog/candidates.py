"""The table that travels between stages: candidates and their scores, in the caller's ids.

    learner_id | course_id | <score columns> ...        one row per (learner, course) pair

Both models fill it (`NCFRecommender.recommend_table` / `.score_table`, `glmix`'s scorer), the
blender reads it and adds its own columns, the export writes it. The rules, checked by
`validate_candidates`:

- ragged: a learner has as many rows as it has candidates; no padding rows, no `None`;
- ids are the caller's ids, of an integer or string dtype (never `object`), never missing;
- a (learner, course) pair appears once;
- a learner's rows are contiguous (`sort_by_learner` makes them so), so the table can be cut
  into chunks of whole learners (`learner_bounds`);
- score columns are floating point and finite, unless the caller allows NaN for a column
  whose model could not score a pair (the blender then falls back, and says so).

Errors name the column, the rule, the count of offending rows and a few examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "LEARNER",
    "COURSE",
    "CandidateError",
    "validate_candidates",
    "sort_by_learner",
    "learner_bounds",
    "learner_chunks",
    "id_column",
]

LEARNER = "learner_id"
COURSE = "course_id"
_N_EXAMPLES = 5


class CandidateError(ValueError):
    """A candidate table breaks the contract (see the module docstring)."""


def id_column(index: pd.Index, positions: np.ndarray) -> pd.array:
    """Caller ids at `positions` of an id map's index, keeping its dtype (str stays str, not
    the `object` array that `Index.to_numpy()` gives)."""
    return index.take(np.asarray(positions, dtype=np.int64)).array


def _examples(frame: pd.DataFrame, mask: np.ndarray, columns: Sequence[str]) -> list:
    rows = frame.loc[mask, list(columns)].head(_N_EXAMPLES)
    return [tuple(r) for r in rows.itertuples(index=False, name=None)]


def _check_ids(frame: pd.DataFrame, column: str, name: str) -> None:
    dtype = frame[column].dtype
    is_int = pd.api.types.is_integer_dtype(dtype)
    is_str = pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype)
    if not (is_int or is_str):
        raise CandidateError(
            f"{name}.{column}: ids must have an integer or string dtype, got {dtype} "
            "(convert them, e.g. frame[column].astype('str'))"
        )
    missing = frame[column].isna().to_numpy()
    if missing.any():
        raise CandidateError(
            f"{name}.{column}: ids must not be missing; {int(missing.sum()):,} of "
            f"{len(frame):,} rows are (e.g. rows {np.flatnonzero(missing)[:_N_EXAMPLES].tolist()})"
        )


def _learner_codes(frame: pd.DataFrame) -> np.ndarray:
    return pd.factorize(frame[LEARNER], sort=False, use_na_sentinel=False)[0].astype(np.int64)


def validate_candidates(
    frame: pd.DataFrame,
    *,
    score_columns: Iterable[str] = (),
    allow_nan: Iterable[str] = (),
    name: str = "candidates",
) -> pd.DataFrame:
    """Check `frame` against the contract and return it unchanged (raises `CandidateError`).

    score_columns: columns that must exist and be floating point and finite; those also in
    `allow_nan` may hold NaN (never +-inf)."""
    if not isinstance(frame, pd.DataFrame):
        raise CandidateError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}")
    score_columns, allow_nan = list(score_columns), set(allow_nan)
    absent = [c for c in (LEARNER, COURSE, *score_columns) if c not in frame.columns]
    if absent:
        raise CandidateError(
            f"{name}: column(s) {absent} missing; the table has {list(frame.columns)}"
        )
    _check_ids(frame, LEARNER, name)
    _check_ids(frame, COURSE, name)
    for col in score_columns:
        dtype = frame[col].dtype
        if not pd.api.types.is_float_dtype(dtype):
            raise CandidateError(f"{name}.{col}: scores must be floating point, got {dtype}")
        values = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isinf(values) | (np.isnan(values) if col not in allow_nan else False)
        if np.any(bad):
            raise CandidateError(
                f"{name}.{col}: scores must be finite; {int(np.sum(bad)):,} of {len(values):,} "
                f"rows are NaN or infinite (e.g. {_examples(frame, bad, (LEARNER, COURSE, col))})"
            )
    if len(frame) == 0:
        return frame
    codes = _learner_codes(frame)
    course = pd.factorize(frame[COURSE], sort=False)[0].astype(np.int64)
    n_courses = int(course.max()) + 1
    pair = codes * n_courses + course
    dup = pd.Index(pair).duplicated()
    if dup.any():
        raise CandidateError(
            f"{name}: a (learner_id, course_id) pair may appear once; {int(dup.sum()):,} rows "
            f"repeat one (e.g. {_examples(frame, dup, (LEARNER, COURSE))})"
        )
    _check_contiguous(frame, codes, name)
    return frame


def sort_by_learner(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by learner in first-seen order, each learner's rows in their old order."""
    if len(frame) == 0:
        return frame
    order = np.argsort(_learner_codes(frame), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def _check_contiguous(frame: pd.DataFrame, codes: np.ndarray, name: str) -> np.ndarray:
    """(runs + 1,) row offsets of the runs of equal `codes` (the learners' first-seen codes);
    raises `CandidateError` when a learner's rows are split over several runs."""
    breaks = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = codes[np.r_[0, breaks]]
    # codes are in first-seen order, so contiguous runs carry the codes 0, 1, 2, ... in turn
    if len(starts) != int(codes.max()) + 1:
        seen = np.bincount(starts)
        again = np.flatnonzero(seen > 1)[:_N_EXAMPLES]
        ex = pd.unique(frame[LEARNER].to_numpy()[np.isin(codes, again)])[:_N_EXAMPLES].tolist()
        raise CandidateError(
            f"{name}.{LEARNER}: a learner's rows must be contiguous; {int((seen > 1).sum()):,} "
            f"learner(s) are split (e.g. {ex}); use watchlog.candidates.sort_by_learner"
        )
    return np.r_[0, breaks, len(frame)].astype(np.int64)


def learner_bounds(frame: pd.DataFrame, name: str = "candidates") -> np.ndarray:
    """(n_learners + 1,) row offsets of each learner's run of rows; raises `CandidateError`
    when a learner's rows are not contiguous (it would count as two learners)."""
    if len(frame) == 0:
        return np.zeros(1, dtype=np.int64)
    return _check_contiguous(frame, _learner_codes(frame), name)


def learner_chunks(frame: pd.DataFrame, learners_per_chunk: int) -> Iterator[pd.DataFrame]:
    """Slices of `frame` holding `learners_per_chunk` whole learners each (views, no copy)."""
    if learners_per_chunk < 1:
        raise ValueError(f"learners_per_chunk: must be >= 1, got {learners_per_chunk}")
    bounds = learner_bounds(frame)
    for lo in range(0, len(bounds) - 1, learners_per_chunk):
        hi = min(lo + learners_per_chunk, len(bounds) - 1)
        yield frame.iloc[bounds[lo] : bounds[hi]]
