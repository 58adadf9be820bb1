"""experiments.run_log: the run's log file is written into paths.output_dir."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from experiments.run_log import log_into_run_folder

ROOT = Path(__file__).resolve().parents[1]


def test_a_handler_on_the_run_folder_is_added_once_and_receives_records(tmp_path):
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        path = log_into_run_folder(tmp_path / "run", "job")
        assert log_into_run_folder(tmp_path / "run", "job") == path  # idempotent
        assert len(root.handlers) == len(before) + 1
        old_level, root.level = root.level, logging.INFO
        logging.getLogger("experiments.somewhere").info("a line for the run")
        root.level = old_level
        for h in root.handlers:
            h.flush()
        text = path.read_text()  # the format of the first file handler (pytest's, here)
        assert "experiments.somewhere" in text and "a line for the run" in text
    finally:
        for h in set(root.handlers) - set(before):
            root.removeHandler(h)
            h.close()


def test_an_entry_point_with_another_output_dir_logs_there(tmp_path):
    out = tmp_path / "my_run"
    done = subprocess.run(
        [sys.executable, "-m", "experiments.baselines", "data=synthetic_small",
         "baselines.two_tower=false", "baselines.mf=false", "threads=1",
         f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    log = (out / "baselines.log").read_text()
    assert "EASE" in log and "[__main__][INFO] wrote" in log
    assert (tmp_path / "hydra" / "baselines.log").read_text() == log  # Hydra's own copy too
