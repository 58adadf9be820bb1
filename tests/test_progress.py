"""Progress a person can follow: bars on a terminal, a few log lines elsewhere, silence for
quick steps; the end-of-run summary; no global warning filters set at import."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import watchlog.progress as prog
from experiments.summary import (
    Intervals,
    StageMeter,
    StageRecord,
    headline_metrics,
    run_summary,
    summary_text,
)
from ncf.epoch_log import use_progress_bar

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    """`time` stand-in whose perf_counter advances `step` seconds per call."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now


def logged_lines(caplog, monkeypatch, n: int, step: float, total: bool = True) -> list[str]:
    monkeypatch.setenv(prog.MODE_ENV, "log")
    monkeypatch.setattr(prog, "time", FakeClock(step))
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        items = range(n) if total else (i for i in range(n))
        out = list(prog.progress(items, desc="step", unit="chunks", logger=log))
    assert out == list(range(n))  # every item is yielded, in order
    return [r.getMessage() for r in caplog.records if r.name == "test.progress"]


def test_a_long_step_logs_each_quarter_and_its_end(caplog, monkeypatch):
    lines = logged_lines(caplog, monkeypatch, n=1000, step=1.0)  # ~1000 s in all
    assert len(lines) == 4  # 25%, 50%, 75%, done: never one line per item
    assert [line.split("(")[1].split("%")[0] for line in lines[:3]] == ["25", "50", "75"]
    assert "left" in lines[0] and lines[-1].startswith("step: done, 1,000/1,000 chunks (100%)")


def test_a_quick_step_writes_nothing(caplog, monkeypatch):
    assert logged_lines(caplog, monkeypatch, n=1000, step=0.001) == []  # 1 s < LOG_AFTER_S


def test_without_a_total_at_most_a_line_a_minute(caplog, monkeypatch):
    lines = logged_lines(caplog, monkeypatch, n=600, step=1.0, total=False)  # ~600 s
    assert 5 <= len(lines) <= 11
    assert lines[-1].startswith("step: done, 600 chunks")


def test_off_mode_and_bad_mode(monkeypatch, caplog):
    monkeypatch.setenv(prog.MODE_ENV, "off")
    assert list(prog.progress([1, 2], desc="x")) == [1, 2] and not caplog.records
    monkeypatch.setenv(prog.MODE_ENV, "loud")
    with pytest.raises(ValueError, match="NCF_GLMIX_PROGRESS='loud'.*auto, bar, log, off"):
        prog.progress([1], desc="x")


def test_auto_mode_follows_the_terminal(monkeypatch):
    monkeypatch.delenv(prog.MODE_ENV, raising=False)

    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert prog.progress_mode() == "bar" and use_progress_bar(True)
    assert not use_progress_bar(False)  # a config that turns the bar off keeps it off
    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert prog.progress_mode() == "log" and not use_progress_bar(True)


def test_stage_meter_logs_a_failed_stage_as_failed(caplog):
    meter = StageMeter()
    caplog.set_level(logging.INFO, logger="experiments.summary")
    with pytest.raises(ValueError), meter.stage("blend_models"):
        raise ValueError("rolling_folds: cutoff 0 is not after the first event")
    assert "-- blend_models FAILED after" in caplog.text
    assert "ValueError: rolling_folds: cutoff 0" in caplog.text
    assert "blend_models done" not in caplog.text
    assert [r.name for r in meter.records] == ["blend_models"]


def test_stage_meter_and_summary_table(tmp_path):
    meter = StageMeter()
    with meter.stage("data"):
        block = bytearray(64 * 2**20)  # 64 MiB touched inside the stage
        block[::4096] = b"x" * len(block[::4096])
    del block
    with meter.stage("model"):
        pass
    data, model = meter.records
    assert data.name == "data" and data.seconds > 0 and model.seconds >= 0
    if data.per_stage:  # Linux: the peak is reset per stage
        assert data.peak_gib >= model.peak_gib + 0.04
    text = summary_text(
        meter.records,
        [{"stage": "blend (test)", "system": "served", "metric": "ndcg@10", "value": 0.2,
          "low": 0.18, "high": 0.22, "n": 100}],
        {"published lists": "/x/lists"},
        ci=0.95,
    )  # fmt: skip
    assert "data" in text and "model" in text and "total" in text
    assert "[0.1800, 0.2200]" in text and "published lists: /x/lists" in text
    rec = StageRecord("glmix", 90.0, 1.0, per_stage=False)
    assert "1 min 30.0 s" in summary_text([rec], [], {}, ci=0.95)
    assert "peak so far" in summary_text([rec], [], {}, ci=0.95)


@pytest.mark.parametrize("k", [10, 5])
def test_headline_metrics_from_a_run_folder(tmp_path, k):
    """At the served length, whatever blend.k is (ndcg@10 was hard-coded: k=5 crashed)."""
    import numpy as np
    import pandas as pd

    (tmp_path / "blend").mkdir()
    rng = np.random.default_rng(0)
    frames = [
        pd.DataFrame({"system": s, "learner_id": np.arange(200), f"ndcg@{k}": rng.uniform(lo, lo + 0.2, 200)})
        for s, lo in (("two_tower", 0.1), ("personalized", 0.2), ("rrf", 0.0))
    ]  # fmt: skip
    pd.concat(frames).to_parquet(tmp_path / "blend" / "test_per_learner.parquet")
    (tmp_path / "blend" / "metrics.json").write_text(json.dumps({"serve": "personalized"}))
    rows = headline_metrics(tmp_path, Intervals(n_boot=200))
    assert [r["system"] for r in rows] == ["two_tower", "personalized"]  # rrf is no headline
    for r in rows:
        assert r["low"] < r["value"] < r["high"] and r["n"] == 200 and r["metric"] == f"ndcg@{k}"


def test_the_summary_names_the_runs_interval_level(tmp_path):
    """evaluate.ci=0.5: the header says 50% (it said 95% whatever the level) and the bands
    are the run's 50% ones, narrower than 95% ones of the same values."""
    import numpy as np
    import pandas as pd

    (tmp_path / "blend").mkdir()
    values = np.random.default_rng(0).uniform(0.1, 0.3, 300)
    frame = pd.DataFrame({"system": "two_tower", "learner_id": np.arange(300), "ndcg@10": values})
    frame.to_parquet(tmp_path / "blend" / "test_per_learner.parquet")
    (tmp_path / "blend" / "metrics.json").write_text(json.dumps({"serve": "two_tower"}))
    (tmp_path / "resolved_config.yaml").write_text("seed: 0\nevaluate: {ci: 0.5, n_boot: 300}\n")
    text = run_summary([StageRecord("blend", 1.0, 0.1, per_stage=True)], tmp_path, {})
    assert "50% interval" in text and "95% interval" not in text
    half = Intervals(n_boot=300, ci=0.5).ci_of(values)
    assert f"[{half.low:.4f}, {half.high:.4f}]" in text


def test_importing_the_toolkit_sets_no_warning_filters():
    # Libraries we import set their own filters; none may come from the toolkit's modules.
    code = (
        "import sys, warnings\n"
        "ours = ('watchlog', 'evaluation', 'ncf', 'glmix', 'blend', 'export', 'experiments')\n"
        "calls = []\n"
        "def spy(real):\n"
        "    def wrapped(*a, **k):\n"
        "        caller = sys._getframe(1).f_globals.get('__name__', '')\n"
        "        if caller.split('.')[0] in ours: calls.append((caller, a, k))\n"
        "        return real(*a, **k)\n"
        "    return wrapped\n"
        "warnings.filterwarnings = spy(warnings.filterwarnings)\n"
        "warnings.simplefilter = spy(warnings.simplefilter)\n"
        "import watchlog, evaluation, ncf, glmix, blend, export\n"
        "import experiments.pipeline, experiments.train_ncf, experiments.train_glmix\n"
        "import experiments.blend, experiments.export, ncf.plots, ncf.training\n"
        "print(calls)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_headline_glmix_takes_the_evaluate_stage_interval(tmp_path):
    (tmp_path / "glmix").mkdir()
    (tmp_path / "glmix" / "metrics.json").write_text(
        json.dumps({"model": "default", "test": {"auc": 0.7, "per_entity_auc_mean": 0.68}})
    )
    rows = headline_metrics(tmp_path)
    assert [r["low"] for r in rows] == [None, None]  # no evaluate stage: a point figure
    (tmp_path / "evaluation").mkdir()
    band = {"auc": {"mean": 0.7, "low": 0.69, "high": 0.71, "n": 300}}
    (tmp_path / "evaluation" / "metrics.json").write_text(json.dumps({"glmix": band}))
    auc, per_learner = headline_metrics(tmp_path)
    assert (auc["low"], auc["high"], auc["n"]) == (0.69, 0.71, 300)
    assert per_learner["low"] is None  # the stage gave no per-learner band here
