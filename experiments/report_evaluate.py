"""Report section of the evaluate stage (evaluation/metrics.json; `experiments.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.report_blocks import Block, Note, Table, fmt, missing, read_json

__all__ = ["evaluation_blocks"]

SEGMENT_K = 10  # the per-segment table's cut-off (the nearest K evaluated when absent)


def _cell(r: dict[str, Any]) -> str:
    return f"{fmt(r['mean'])} [{fmt(r['low'])}, {fmt(r['high'])}]"


def evaluation_blocks(run_dir: Path) -> list[Block]:
    path = run_dir / "evaluation" / "metrics.json"
    if not path.is_file():
        return [missing("evaluation", path, run_dir)]
    m = read_json(path)
    s: list[Block] = []
    level = f"{float(m['settings']['ci']):.0%}"
    if "ncf" in m:
        n = m["ncf"]
        by_metric: dict[str, dict[str, Any]] = {}
        for r in n["intervals"]:
            by_metric.setdefault(r["name"], {"metric": r["name"]})[f"@{r['k']}"] = _cell(r)
        s.append(Table.from_records(
            list(by_metric.values()),
            f"Two-tower, test fold, whole catalogue (seen courses excluded): mean over "
            f"{n['learners']:,} learners [{level} bootstrap interval over learners]",
        ))  # fmt: skip
        if n["by_segment"]:
            ks = sorted({r["k"] for r in n["intervals"]})
            k = min(ks, key=lambda x: abs(x - SEGMENT_K))
            rows: dict[str, dict[str, Any]] = {}
            for r in n["by_segment"]:
                name, _, at = r["metric"].partition("@")
                if int(at) == k and name in ("ndcg", "recall", "hr"):
                    row = rows.setdefault(
                        str(r["segment"]), {"segment": r["segment"], "learners": r["users"]}
                    )
                    row[r["metric"]] = _cell(r)
            s.append(Table.from_records(
                list(rows.values()),
                f"Two-tower per learner segment ({n['segment_column']}) at K={k} "
                f"[{level} interval over the segment's learners]",
            ))  # fmt: skip
    if "glmix" in m:
        g = m["glmix"]
        s.append(Table.from_mapping(
            {"AUC": _cell(g["auc"]), "log loss": g["log_loss"],
             "per-learner AUC (mean)": _cell(g["per_learner_auc"]),
             "rows": g["rows"], "learners": g["learners"]},
            f"GLMix, test impressions [{level} intervals over learners]",
        ))  # fmt: skip
    for name, why in (m.get("skipped") or {}).items():
        s.append(Note(f"{name}: not evaluated ({why})", "missing"))
    return s
