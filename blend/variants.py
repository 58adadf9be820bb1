"""The blender settings to try: every kind, with each two-tower normalization, over small grids.

    variants = make_variants(
        context=["glmix_logit", "log_popularity", "course_age", "retrieval_rank"],
        fixed_weights={"ncf": 1.0, "glmix_logit": 0.5},
        rrf_columns=["ncf_score", "glmix_logit"],
        logistic={"l2": [0.1, 1.0, 10.0]},
        personalized={"learner_l2": [10.0, 30.0], "segment_l2": [30.0]},
    )

"ncf" stands for the two-tower feature, one variant per normalization (`ncf_z` for the
per-learner z-score, `ncf_log_softmax` for the log-softmax over the catalogue). Kinds: fixed
(LinearBlender with given weights), rrf (reciprocal-rank fusion), logistic (global), rank
(global weights fitted to the soft rank of what learners watched), personalized
(per-segment and per-learner random effects). A grid is a mapping of constructor argument ->
values; every combination becomes one variant.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from blend.blenders import (
    LinearBlender,
    LogisticBlender,
    PersonalizedBlender,
    RankBlender,
    RankFusionBlender,
)
from blend.features import NCF_NORMALIZATIONS
from blend.selection import Variant

__all__ = ["KINDS", "make_variants"]

KINDS = ("fixed", "rrf", "logistic", "rank", "personalized")


def _grid(grid: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    grid = dict(grid or {})
    keys = list(grid)
    values = [v if isinstance(v, list | tuple) else [v] for v in grid.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _label(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def make_variants(
    *,
    context: Sequence[str],
    normalizations: Sequence[str] = ("zscore", "log_softmax"),
    kinds: Sequence[str] = KINDS,
    fixed_weights: Mapping[str, float] | None = None,
    rrf_columns: Sequence[str] = ("ncf_score", "glmix_logit"),
    rrf_k: float = 60.0,
    logistic: Mapping[str, Sequence[Any]] | None = None,
    rank: Mapping[str, Sequence[Any]] | None = None,
    personalized: Mapping[str, Sequence[Any]] | None = None,
) -> list[Variant]:
    """Variants of every kind in `kinds` (see the module docstring). context: the features
    beside the two-tower's (GLMix columns, popularity, age, rank)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds: {unknown} are not blender kinds; choose from {KINDS}")
    bad = [n for n in normalizations if n not in NCF_NORMALIZATIONS]
    if bad:
        raise ValueError(f"normalizations: {bad}; choose from {list(NCF_NORMALIZATIONS)}")
    out: list[Variant] = []
    if "rrf" in kinds:  # rank fusion reads raw scores: no normalization to choose
        out.append(
            Variant("rrf", f"k={rrf_k}", RankFusionBlender(list(rrf_columns), rrf_k), {"k": rrf_k})
        )
    for norm in normalizations:
        ncf = NCF_NORMALIZATIONS[norm]
        features = [ncf, *context]
        if "fixed" in kinds:
            weights = {(ncf if f == "ncf" else f): w for f, w in (fixed_weights or {}).items()}
            weights = weights or {ncf: 1.0}
            out.append(Variant("fixed", norm, LinearBlender(weights), {"normalization": norm}))
        if "logistic" in kinds:
            for s in _grid(logistic):
                out.append(
                    Variant(
                        "logistic", f"{norm}, {_label(s)}", LogisticBlender(features, **s),
                        {"normalization": norm, **s},
                    )
                )  # fmt: skip
        if "rank" in kinds:
            for s in _grid(rank):
                out.append(
                    Variant(
                        "rank", f"{norm}, {_label(s)}" if s else norm,
                        RankBlender(features, **s), {"normalization": norm, **s},
                    )
                )  # fmt: skip
        if "personalized" in kinds:
            for s in _grid(personalized):
                out.append(
                    Variant(
                        "personalized", f"{norm}, {_label(s)}",
                        PersonalizedBlender(features, **s), {"normalization": norm, **s},
                    )
                )  # fmt: skip
    return out
