"""Markdown tables for run summaries (the benchmarks print theirs the same way)."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["log_table", "markdown_table"]

_log = logging.getLogger(__name__)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """`rows` (dicts; the first one's keys are the columns) as a Markdown table."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return (f"### {title}\n\n" if title else "") + "\n".join(lines)


def log_table(rows: list[dict[str, Any]], title: str = "", logger: logging.Logger = _log) -> str:
    """`markdown_table`, written to `logger` at INFO; returns the text."""
    text = markdown_table(rows, title)
    logger.info("\n%s", text)
    return text
