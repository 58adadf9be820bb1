"""Report sections of the run itself, its data and its export (`experiments.report`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.report_blocks import (
    Block,
    Note,
    Table,
    missing,
    read_json,
)

__all__ = ["data_blocks", "export_blocks", "run_blocks"]


# ---- run ----------------------------------------------------------------------------------------
def run_blocks(run_dir: Path) -> list[Block]:
    s: list[Block] = []
    path = run_dir / "run_manifest.json"
    if not path.is_file():
        s.append(missing("run manifest", path, run_dir))
        return s
    m = read_json(path)
    stages = (m.get("config") or {}).get("stages") or {}
    s.append(
        Table.from_mapping(
            {
                "finished at": m.get("finished_at"),
                "code version": m.get("code_version"),
                "data fingerprint": m.get("data_fingerprint"),
                "data": ((m.get("config") or {}).get("data") or {}).get("name"),
                "split": (((m.get("config") or {}).get("split") or {}).get("fn") or {}).get(
                    "_target_"
                ),
                "stages on": ", ".join(k for k, v in stages.items() if v) or None,
                "machine": ", ".join(f"{k}={v}" for k, v in (m.get("machine") or {}).items()),
            },
            "What ran",
        )
    )
    if m.get("timings_seconds"):
        s.append(
            Table.from_mapping(m["timings_seconds"], "Wall time per step (s)", ("step", "seconds"))
        )
    if m.get("updates"):
        s.append(
            Table.from_records(
                [{**u, "overrides": " ".join(u.get("overrides") or []) or "(none)"}
                 for u in m["updates"]],
                "Stages run again in this folder after the run (run_dir mode of their command)",
            )
        )  # fmt: skip
    return s


# ---- data ---------------------------------------------------------------------------------------
def data_blocks(run_dir: Path) -> list[Block]:
    s: list[Block] = []
    path = run_dir / "data_report.json"
    if not path.is_file():
        s.append(missing("data report", path, run_dir))
        return s
    d = read_json(path)
    rows = [
        {"table": t, "figure": k, "value": v}
        for t, counts in (d.get("tables") or {}).items()
        for k, v in counts.items()
    ]
    s.append(Table.from_records(rows, "Tables as loaded and validated"))
    if d.get("steps"):
        s.append(Table.from_records(d["steps"], "Cleaning steps (rows before, after, why)"))
    splits = d.get("splits") or {}
    if splits:
        fields = list(dict.fromkeys(k for v in splits.values() for k in v))
        s.append(
            Table(
                ["", *splits],
                [[f, *(splits[n].get(f) for n in splits)] for f in fields],
                "Split windows (inputs before the cutoff, labels from it to label_end)",
            )
        )
    for note in d.get("notes") or []:
        s.append(Note(str(note)))
    return s


# ---- export -------------------------------------------------------------------------------------
def export_blocks(run_dir: Path) -> list[Block]:
    s: list[Block] = []
    path = run_dir / "export.json"
    if not path.is_file():
        s.append(missing("export", path, run_dir))
        return s
    e = read_json(path)
    s.append(
        Table.from_mapping(
            {k: e.get(k) for k in ("published", "version", "model_version", "location", "rows",
                                   "seconds", "error") if k in e},
            "Publication",
        )
    )  # fmt: skip
    manifest = _manifest_path(run_dir, e)
    if manifest is None:
        s.append(Table.from_records(e.get("gates") or [], "Quality gates"))
        s.append(
            Note(
                "Published version's manifest: not found (nothing published, or the sink is "
                "not a folder / was moved)",
                "missing",
            )  # fmt: skip
        )
        return s
    man = json.loads(manifest.read_text())
    gates = (man.get("gates") or {}).get("results") or []
    s.append(
        Table.from_records(
            [{"gate": g.get("name"), "passed": g.get("passed"), "rule": g.get("rule"),
              "value": g.get("value"), "threshold": g.get("threshold"), "counts": g.get("counts")}
             for g in gates],
            "Quality gates (from the version's manifest)",
        )
    )  # fmt: skip
    counts = man.get("counts") or {}
    s.append(
        Table.from_mapping(
            {"format": man.get("format"), "version": man.get("version"),
             "created at": man.get("created_at"), "code version": man.get("code_version"),
             "data fingerprint": man.get("data_fingerprint"),
             "checksum": f"{(man.get('checksum') or {}).get('algorithm')} "
                         f"{(man.get('checksum') or {}).get('hex')}",
             "sink": (man.get("sink") or {}).get("kind"),
             "rows": counts.get("rows"), "learners": counts.get("learners"),
             "files": ", ".join(f"{f['name']} ({f['rows']:,} rows)" for f in man.get("files") or [])},
            f"Manifest of the published version ({manifest})",
        )
    )  # fmt: skip
    if counts.get("rows_per_source"):
        s.append(
            Table(
                ["source", "rows", "learners (any row)"],
                [[k, v, (counts.get("learners_per_source") or {}).get(k)]
                 for k, v in counts["rows_per_source"].items()],
                "Published rows by source",
            )
        )  # fmt: skip
    if man.get("schema"):
        s.append(Table.from_mapping(man["schema"], "Schema", ("column", "type")))
    return s


def _manifest_path(run_dir: Path, e: dict[str, Any]) -> Path | None:
    """The version's manifest at the recorded location, else under the run's lists/ (a run
    folder copied elsewhere)."""
    from export.readers import manifest_file  # _manifest.json, or an older manifest.json

    folders = []
    if e.get("location"):
        folders.append(Path(e["location"]))
    if e.get("version"):
        folders.append(run_dir / "lists" / "versions" / str(e["version"]))
    found = (manifest_file(f) for f in folders if f.is_dir())
    return next((p for p in found if p is not None), None)
