"""The data report: counts before and after every step, so nothing is lost unseen."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchlog.io import to_jsonable, write_json

__all__ = ["DataReport"]


@dataclass
class DataReport:
    """Ordered record of what each stage did to the data.

    `tables` holds row counts per table, `steps` one entry per cleaning / filtering
    step (rows before, rows after, removed, and step-specific detail), `splits`
    counts per split window, `notes` anything a reader must know (defaults filled,
    columns absent in the source).
    """

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_table(self, name: str, rows: int, **detail: Any) -> None:
        self.tables[name] = {"rows": int(rows), **detail}

    def add_step(self, step: str, table: str, before: int, after: int, **detail: Any) -> None:
        self.steps.append(
            {
                "step": step,
                "table": table,
                "rows_before": int(before),
                "rows_after": int(after),
                "removed": int(before) - int(after),
                **detail,
            }
        )

    def add_split(self, window: str, **counts: Any) -> None:
        self.splits[window] = counts

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {"tables": self.tables, "steps": self.steps, "splits": self.splits, "notes": self.notes}
        )

    def write_json(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_dict())

    def __str__(self) -> str:
        lines = ["Tables"]
        for name, info in self.tables.items():
            extra = ", ".join(f"{k}={_fmt(v)}" for k, v in info.items() if k != "rows")
            lines.append(
                f"  {name:<12} {info['rows']:>12,} rows" + (f"  ({extra})" if extra else "")
            )
        if self.steps:
            lines.append("Steps (rows before -> after)")
            for s in self.steps:
                extra = {
                    k: v
                    for k, v in s.items()
                    if k not in ("step", "table", "rows_before", "rows_after", "removed")
                }
                detail = ", ".join(f"{k}={_fmt(v)}" for k, v in extra.items())
                lines.append(
                    f"  {s['step']:<28} {s['table']:<8} {s['rows_before']:>12,} -> "
                    f"{s['rows_after']:>12,}  (-{s['removed']:,})"
                    + (f"  {detail}" if detail else "")
                )
        if self.splits:
            lines.append("Split windows")
            for window, counts in self.splits.items():
                detail = ", ".join(f"{k}={_fmt(v)}" for k, v in counts.items())
                lines.append(f"  {window:<12} {detail}")
        if self.notes:
            lines.append("Notes")
            lines.extend(f"  - {n}" for n in self.notes)
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)
