"""The run's log file lives in the run's folder, wherever `paths.output_dir` points.

Hydra writes `<job>.log` into its own output folder (`hydra.run.dir`). A user who sets
`paths.output_dir=/some/run` gets every output there, and would find the log in
`outputs/<job>/<time>/` instead. `log_into_run_folder` adds a file handler on the run folder
(same format as Hydra's file handler) when the two differ; nothing when they are the same.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["log_into_run_folder"]

_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"


def log_into_run_folder(output_dir: str | Path, job: str) -> Path:
    """Make sure `<output_dir>/<job>.log` receives the root logger's records; its path."""
    folder = Path(output_dir).resolve()
    target = folder / f"{job}.log"
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == target:
            return target
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(target)
    existing = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    handler.setFormatter(existing[0].formatter if existing else logging.Formatter(_FORMAT))
    root.addHandler(handler)
    return target
