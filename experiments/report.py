"""The run report: `python -m experiments.report run_dir=outputs/pipeline/<timestamp>`.

`build_report(run_dir)` reads whatever a pipeline run's folder holds and writes one
self-contained page, `<run_dir>/report.html` (atomically; figures inline as base64 PNG, no
other file needed to view it), with one section per stage:

    run       run_manifest.json: code version, data fingerprint, stage timings
    data      data_report.json: tables, cleaning steps, split windows
    ncf       ncf/metrics.json, training curves, embedding maps and the nearest-neighbours
              figure (ncf/plots/*.png), per-segment test figures (blend/test_per_learner)
    glmix     glmix/metrics.json (validation history), glmix/model (coefficients; on the
              synthetic platform set beside the platform's true topic interests)
    blend     blend/metrics.json (test table with bootstrap intervals from
              blend/test_per_learner.parquet, per-segment rows, metric-vs-K curves from
              blend/test_curves.parquet, blend weights, chosen variants, tournaments, replay)
    evaluation evaluation/metrics.json: the saved models' test metrics at every K with
              intervals, per segment, GLMix's AUC with its interval
    export    export.json and the published version's _manifest.json

A section whose stage was computed from outputs retrained since (`experiments.stages.
stale_stages`, e.g. the blend after `python -m experiments.train_ncf run_dir=...`) opens with
a note saying so and the command that brings it up to date. A section whose inputs are missing says so in the page ("not run") instead of failing; a
part that fails on input it cannot read shows the error there and in the log. The page is a
Jinja2 template shipped with the package (experiments/templates/report.html.j2), autoescaped.
The pipeline calls `build_report` at its end when `stages.report` is true.

Files: report.py (the page), report_blocks.py (tables, figures, notes, number format),
report_stages.py (run, data, export), report_models.py (ncf, glmix), report_blend.py (blend),
report_evaluate.py (evaluation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from jinja2 import Environment, PackageLoader, StrictUndefined
from omegaconf import DictConfig

from experiments.report_blend import blend_blocks
from experiments.report_blocks import Block, MissingInput, Note, Section, fmt, is_numeric
from experiments.report_evaluate import evaluation_blocks
from experiments.report_models import glmix_blocks, ncf_blocks
from experiments.report_stages import data_blocks, export_blocks, run_blocks
from experiments.run_log import log_into_run_folder
from experiments.stages import RECORD_PATHS, stale_message, stale_stages
from watchlog.io import write_text

__all__ = ["build_report", "render", "run"]

log = logging.getLogger(__name__)

REPORT = "report.html"


SECTIONS: tuple[tuple[str, str, Callable[[Path], list[Block]]], ...] = (
    ("run", "Run", run_blocks),
    ("data", "Data", data_blocks),
    ("ncf", "Two-tower (ncf)", ncf_blocks),
    ("glmix", "GLMix (glmix)", glmix_blocks),
    ("blend", "Blend (blend)", blend_blocks),
    ("evaluation", "Evaluation (evaluation)", evaluation_blocks),
    ("export", "Export", export_blocks),
)  # (anchor, title, builder) in page order
STAGE_OF_SECTION = {"blend": "blend", "evaluation": "evaluate", "export": "export"}


def _section(
    sid: str, title: str, builder: Callable[[Path], list[Block]], run_dir: Path
) -> Section:
    """The section, or one that says why it could not be built (the page is still written)."""
    try:
        return Section(sid, title, builder(run_dir))
    except MissingInput as err:
        return Section(sid, title, [Note(f"not run: {err}", "missing")])
    except Exception as err:
        log.exception("report section %r failed", sid)
        return Section(sid, title, [Note(f"could not be built: {type(err).__name__}: {err}",
                                         "error")])  # fmt: skip


def render(run_dir: Path, sections: list[Section]) -> str:
    """The page from the packaged template (autoescaped)."""
    env = Environment(
        loader=PackageLoader("experiments", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.tests["numeric"] = is_numeric
    return env.get_template("report.html.j2").render(
        run_dir=str(run_dir),
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        sections=sections,
    )


def build_report(run_dir: Path) -> Path:
    """Read the run folder, write `<run_dir>/report.html` (atomically); returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: no such folder {run_dir}; give a pipeline run's output")
    marks = ("run_manifest.json", "data_report.json", *RECORD_PATHS.values())
    if not any((run_dir / m).is_file() for m in marks):  # e.g. outputs/pipeline, one level up
        raise FileNotFoundError(
            f"run_dir: {run_dir} is not a pipeline run folder (no run_manifest.json, "
            "data_report.json or stage record in it); give one run's folder, e.g. "
            "outputs/pipeline/<timestamp>"
        )
    sections = [_section(*entry, run_dir) for entry in SECTIONS]
    stale = stale_stages(run_dir)
    for section in sections:
        stage = STAGE_OF_SECTION.get(section.id)
        if stage in stale:  # first thing the section says: its figures are out of date
            message = stale_message(stage, stale[stage], run_dir)
            section.blocks.insert(0, Note(f"Out of date: {message}", "stale"))
    out = write_text(run_dir / REPORT, render(run_dir, sections))
    log.info("wrote %s (%s)", out, ", ".join(f"{s.id}: {s.status}" for s in sections))
    return out


def run(cfg: DictConfig) -> Path:
    return build_report(Path(cfg.run_dir))


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    log_into_run_folder(cfg.paths.output_dir, HydraConfig.get().job.name)
    run(cfg)


if __name__ == "__main__":
    main()
