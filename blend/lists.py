"""From scored candidates to ranked lists: top-K per learner, and the fallback chain.

    top = top_k(table, "blend_score", k=10)      # learner_id, rank, course_id, score
    lists = served_lists(table, "blend_score", k=10, route=route)   # + source

The fallback chain decides, per learner, which score orders its list (`routes`):

    blend       the blender's score            the learner is known to the models (has a
                                               two-tower history and GLMix coefficients)
    two_tower   the two-tower's score over     the learner has a two-tower history, but GLMix
                the pairs it retrieved         never saw it
    popular     the learner's fallback list:   no history: courses popular in its segment and
                segment first, then global     language, then globally popular courses
                (each row's own source)        (a learner unknown to the learner table gets the
                                               global list only)

A list shorter than K (too few candidates) is filled from the learner's fallback rows that are
not in it yet; every row records the source that put it there. Scores never increase down a
list: filled rows get the last score of the list minus 1, 2, ...; popular lists score -rank.
Equal scores are ordered by course id (as every top-k path of the toolkit orders ties by the
lower course), never by the table's row order: the candidate table comes in the two-tower's
retrieval order, so a tie would otherwise be broken by the two-tower, and a blender that ties
often (reciprocal-rank fusion, a constant) would be judged partly on the two-tower's ranking.
Vectorized with one lexsort over all rows: no loop per learner.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from watchlog.candidates import COURSE, LEARNER, learner_bounds, validate_candidates

__all__ = ["ROUTES", "top_k", "top_rows", "ranking_keys", "served_lists", "routes"]

ROUTES = ("blend", "two_tower", "popular")


def _group(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    bounds = learner_bounds(table)
    sizes = np.diff(bounds)
    return np.repeat(np.arange(len(sizes)), sizes), bounds


def _rank_in_group(group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """1-based position of each sorted row within its group (rows sorted by group first)."""
    g = group[order]
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    size = np.diff(np.r_[start, len(g)])
    return np.arange(len(g)) - np.repeat(start, size) + 1


def _course_order(table: pd.DataFrame) -> np.ndarray:
    """(n,) int64 rank of each row's course id among the table's sorted course ids: the tie
    key (module docstring), independent of the row order."""
    codes, _ = pd.factorize(table[COURSE], sort=True)
    return codes.astype(np.int64)


def ranking_keys(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(group, course order), (n,) int64 each: each row's learner (0, 1, ... in table order)
    and its course's tie key. What `top_rows` ranks by beside the score: a caller ranking one
    table many times computes them once."""
    return _group(table)[0], _course_order(table)


def top_rows(
    group: np.ndarray, course_order: np.ndarray, score: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, rank): the k best rows of each group by `score` (ties: the lower course order),
    in (group, rank) order, with their 1-based rank."""
    order = np.lexsort((course_order, -score, group))
    rank = _rank_in_group(group, order)
    top = rank <= k
    return order[top], rank[top].astype(np.int64)


def top_k(table: pd.DataFrame, score_column: str, k: int) -> pd.DataFrame:
    """The k best rows of each learner by `score_column` (ties: the lower course id)."""
    score = table[score_column].to_numpy(np.float64)
    keep, rank = top_rows(*ranking_keys(table), score, k)
    return pd.DataFrame(
        {
            LEARNER: table[LEARNER].array.take(keep),
            "rank": rank,
            COURSE: table[COURSE].array.take(keep),
            "score": score[keep],
        }
    )


def routes(
    learner_ids, *, has_history: np.ndarray, known_to_glmix: np.ndarray | None
) -> np.ndarray:
    """(n,) route per learner (see the module docstring); known_to_glmix None: no GLMix in
    the blend, so every learner with a history takes the blend route."""
    has_history = np.asarray(has_history, dtype=bool)
    known = has_history if known_to_glmix is None else np.asarray(known_to_glmix, dtype=bool)
    if len(has_history) != len(learner_ids) or len(known) != len(learner_ids):
        raise ValueError("routes: one has_history / known_to_glmix value per learner")
    return np.where(has_history & known, "blend", np.where(has_history, "two_tower", "popular"))


def served_lists(
    table: pd.DataFrame, score_column: str, k: int, *, route: pd.Series
) -> pd.DataFrame:
    """The served top-k lists with their source (see the module docstring).

    table: candidates from `build_candidates` (ncf_score, retrieved, fallback_rank,
    fallback_source) plus `score_column`; route: learner_id -> route, one for every learner
    of the table (a learner id repeated in it raises). Returns learner_id, rank, course_id, score, source. The table is checked
    against the candidate contract first (a repeated pair would be served twice)."""
    validate_candidates(table, score_columns=[score_column], name="served_lists: table")
    group, bounds = _group(table)
    first = table[LEARNER].array.take(bounds[:-1])
    route = pd.Series(route)
    if route.index.has_duplicates:  # which of its routes would a learner take?
        repeated = route.index[route.index.duplicated()].unique()
        raise ValueError(
            f"route: one route per learner; {len(repeated):,} learner ids of {len(route):,} "
            f"routes are repeated, e.g. {repeated[:5].tolist()}"
        )
    r = route.reindex(pd.Index(first))
    if r.isna().any():
        missing = list(pd.Index(first)[r.isna().to_numpy()][:5])
        raise KeyError(f"route: no route for learners {missing}")
    bad = ~r.isin(ROUTES)
    if bad.any():
        raise ValueError(f"route: must be one of {ROUTES}, got {sorted(set(r[bad]))}")
    row_route = r.to_numpy(dtype=object)[group]
    fb_rank = table["fallback_rank"].to_numpy(np.float64)
    is_fb = ~np.isnan(fb_rank)
    retrieved = table["retrieved"].to_numpy(bool)
    primary_score = np.select(
        [row_route == "blend", row_route == "two_tower"],
        [table[score_column].to_numpy(np.float64), table["ncf_score"].to_numpy(np.float64)],
        default=-np.nan_to_num(fb_rank, nan=np.inf),
    )
    primary = np.select(
        [row_route == "blend", row_route == "two_tower"], [True, retrieved], default=is_fb
    )
    # Primary rows first (by their score), then fallback rows as filler (by fallback rank).
    usable = primary | is_fb
    tier = np.where(primary, 0, 1)
    key = np.where(primary, -primary_score, fb_rank)
    idx = np.flatnonzero(usable)
    order = idx[np.lexsort((_course_order(table)[idx], key[idx], tier[idx], group[idx]))]
    rank = _rank_in_group(group, order)
    take = order[rank <= k]
    rank = rank[rank <= k]
    source = np.where(
        (tier[take] == 0) & (row_route[take] != "popular"),
        row_route[take],
        table["fallback_source"].to_numpy(dtype=object)[take],
    )
    score = np.where(tier[take] == 0, primary_score[take], np.nan)
    # filler rows: the list's last primary score minus 1, 2, ... (popular lists: -rank)
    filler = np.isnan(score)
    if filler.any():
        g = group[take]
        last = pd.Series(np.where(filler, np.nan, score)).groupby(g).transform("min").to_numpy()
        n_before = pd.Series(~filler).groupby(g).transform("sum").to_numpy()
        base = np.where(np.isnan(last), 0.0, last)
        score = np.where(filler, base - (rank - n_before), score)
    return pd.DataFrame(
        {
            LEARNER: table[LEARNER].array.take(take),
            "rank": rank.astype(np.int64),
            COURSE: table[COURSE].array.take(take),
            "score": score,
            "source": pd.array(source.astype(str), dtype="str"),
        }
    )
