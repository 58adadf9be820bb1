"""Markdown tables for run summaries (the benchmarks print theirs the same way)."""

from __future__ import annotations

from typing import Any

__all__ = ["markdown_table", "print_table"]


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


def print_table(rows: list[dict[str, Any]], title: str = "") -> str:
    text = markdown_table(rows, title)
    print(text, flush=True)
    return text
