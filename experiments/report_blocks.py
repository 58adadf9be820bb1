"""The pieces a run report is made of (`experiments.report`): sections of tables, figures and
notes, figures as inline base64 PNG, and the number format of the page.

Kept apart from the section builders so the template sees a few plain types only:

    Section(id, title, blocks=[Table(...), Image(...), Note(...)])
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "Block",
    "MissingInput",
    "missing",
    "read_json",
    "strip_prefix",
    "Image",
    "Note",
    "Section",
    "Table",
    "fmt",
    "is_numeric",
    "new_figure",
    "png_file",
    "png_figure",
]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    kind: ClassVar[str] = "table"

    @classmethod
    def from_records(
        cls, records: list[dict[str, Any]], caption: str = "", columns: list[str] | None = None
    ) -> Table:
        """Rows of dicts; columns in first-seen order unless given (a missing cell is None)."""
        if columns is None:
            columns = list(dict.fromkeys(k for r in records for k in r))
        return cls(columns, [[r.get(c) for c in columns] for r in records], caption)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], caption: str = "", head=("", "value")) -> Table:
        """A two-column table, one row per key."""
        return cls(list(head), [[k, v] for k, v in mapping.items()], caption)

    @classmethod
    def from_frame(cls, frame, caption: str = "") -> Table:
        return cls([str(c) for c in frame.columns], frame.to_numpy(object).tolist(), caption)


@dataclass
class Image:
    data: str  # base64 PNG
    caption: str = ""
    kind: ClassVar[str] = "image"


@dataclass
class Note:
    text: str
    level: str = "info"  # info | missing | error | stale
    kind: ClassVar[str] = "note"


Block = Table | Image | Note


@dataclass
class Section:
    id: str  # the HTML anchor
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def status(self) -> str:
        """'not run' when nothing but missing-input notes, 'error' when a part failed,
        'stale' when computed from outputs retrained since."""
        levels = {b.level for b in self.blocks if isinstance(b, Note)}
        if "error" in levels:
            return "error"
        if "stale" in levels:
            return "stale"
        if self.blocks and all(isinstance(b, Note) and b.level == "missing" for b in self.blocks):
            return "not run"
        return "partial" if "missing" in levels else "ok"


def new_figure(width: float = 7.0, height: float = 4.0) -> Figure:
    """A figure on the Agg canvas (no pyplot, no display, nothing global)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_figure(fig: Figure) -> str:
    """The figure as base64 PNG."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def png_file(path: Path) -> str:
    """A PNG file as base64 (checked to be a PNG: a broken file would show as a broken image)."""
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path}: not a PNG file (bad signature)")
    return base64.b64encode(data).decode("ascii")


def is_numeric(value: Any) -> bool:
    """A number (not a bool): right-aligned in tables."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def fmt(value: Any) -> str:
    """A cell as text: counts with thousands separators, fractions to 4 decimals, large or tiny
    floats in 3 significant digits, missing as an em dash, containers as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        a = abs(v)
        if v == 0:
            return "0"
        if a >= 10_000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:,.1f}"
        if a >= 1e-4:
            return f"{v:.4f}"
        return f"{v:.2e}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, separators=(", ", ": "))
    return str(value)


class MissingInput(FileNotFoundError):
    """An input of a section is not in the run folder: the section says 'not run'."""


def read_json(path: Path) -> Any:
    """A JSON input of a section; MissingInput (the section says 'not run') when absent."""
    if not path.is_file():
        raise MissingInput(f"{path.name} not found at {path}")
    return json.loads(path.read_text())


def missing(what: str, path: Path, run_dir: Path) -> Note:
    """The note of a section part whose input is not in the run folder."""
    return Note(f"{what}: not run (no {path.relative_to(run_dir)} in the run folder)", "missing")


def strip_prefix(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in metrics.items()}
