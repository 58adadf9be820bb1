"""The number a sweep optimizes: one metric of a run, named by a dotted key.

`python -m experiments.pipeline objective=ncf.valid.val_ndcg@10 ...` makes the entry point
return that metric, which is what Hydra's Optuna sweeper reads (`hydra/sweeper=optuna`);
experiments.compare uses the same dotted keys for its columns.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

__all__ = ["closest", "flatten", "name_list", "objective_value", "require_objective_for_optuna"]

logger = logging.getLogger(__name__)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys; lists and scalars are leaves (a swept
    list such as `blend.replay.methods` stays one value)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def closest(name: str, known: list[str], n: int = 3) -> list[str]:
    """Up to `n` of `known` closest to a misspelt `name` (difflib), best first."""
    return difflib.get_close_matches(name, known, n=n, cutoff=0.5)


def name_list(names: list[str], limit: int = 40) -> str:
    """`names` joined, the first `limit` only, saying how many there are when cut."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, ... ({len(names):,} in all)"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def objective_value(metrics: Mapping[str, Any], key: str | None) -> float | None:
    """The metric at dotted `key` in a run's metrics (as run() returns them), as a float;
    None when no objective is set. A missing or non-numeric key raises, naming it."""
    if key is None:
        return None
    flat = flatten(metrics)
    if key not in flat:
        numeric = sorted(k for k, v in flat.items() if _is_number(v))
        close = closest(key, numeric)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"objective={key!r}: no such metric in this run (is its stage switched on in "
            f"`stages`?).{hint} Set objective to one of the run's numeric metrics: "
            f"{name_list(numeric)}"
        )
    value = flat[key]
    if not _is_number(value):
        raise TypeError(
            f"objective={key!r}: the metric must be a number, got {type(value).__name__} "
            f"{str(value)[:80]!r}; choose a numeric leaf key"
        )
    value = float(value)
    if math.isnan(value):  # Optuna takes NaN as a failed trial; say so in the log, too
        logger.warning("objective %s is NaN for this run", key)
    return value


def require_objective_for_optuna(cfg: DictConfig) -> None:
    """Fail before the run, not after it, when the Optuna sweeper has no objective to read."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("objective") is not None or not HydraConfig.initialized():
        return
    sweeper = str(HydraConfig.get().sweeper.get("_target_", ""))
    if "optuna" in sweeper.lower():
        raise ValueError(
            "hydra/sweeper=optuna needs the metric to optimize: set objective=<dotted metric "
            "key>, e.g. objective=ncf.valid.val_ndcg@10 (see conf/experiment/optuna_example.yaml)"
        )
