"""Stage reuse and crash resume of the main pipeline (experiments.stages).

The fast tests drive `Stages` with stand-in computations; the slow ones run the pipeline on
the small platform: an unchanged rerun reuses every stage, a changed trainer setting retrains
the two-tower only, and a pipeline SIGKILLed during two-tower training or GLMix coordinate
descent, run again with the same command, ends with an uninterrupted run's metrics (exactly:
CPU, one thread, the same seed)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.stages import Stages, stale_stages

ROOT = Path(__file__).resolve().parents[1]

SMALL = [
    "data=synthetic_small", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
    "outputs.plots=false", "threads=1", "split.fn.valid_days=20", "split.fn.test_days=20",
    "split.fn.blend_days=20", "blend.candidates.n_retrieve=40", "blend.variants.logistic.l2=[1.0]",
    "blend.variants.personalized.learner_l2=[30.0]",
    "blend.replay.methods=[gradient,nelder_mead]", "blend.n_boot=200",
]  # fmt: skip


# ---- Stages with stand-in computations (fast) --------------------------------------------------
def _cfg(**over):
    base = {"seed": 0, "threads": None, "split": {"a": 1}, "ncf": {"lr": 0.1},
            "trainer": {"max_epochs": 2}, "outputs": {}, "glmix": {"l2": 1.0}, "reuse": True}  # fmt: skip
    return OmegaConf.create({**base, **over})


def _ncf_stage(cfg, out: Path, calls: list[str]):
    stages = Stages(cfg, out)
    stages.fingerprint = "f" * 64

    def compute(folder: Path):
        calls.append(str(cfg.trainer.max_epochs))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps({"epochs": cfg.trainer.max_epochs}))
        return {"epochs": cfg.trainer.max_epochs}

    return stages.run("ncf", out / "ncf", compute)


def test_stage_reused_with_same_key_recomputed_and_cleared_with_another(tmp_path, caplog):
    calls: list[str] = []
    caplog.set_level(logging.INFO, logger="experiments.stages")
    assert _ncf_stage(_cfg(), tmp_path, calls) == {"epochs": 2}
    (tmp_path / "ncf" / "old_output").write_text("from max_epochs=2")
    assert _ncf_stage(_cfg(), tmp_path, calls) == {"epochs": 2}  # read back, not computed
    assert calls == ["2"] and "reused ncf (key " in caplog.text
    assert _ncf_stage(_cfg(trainer={"max_epochs": 3}), tmp_path, calls) == {"epochs": 3}
    assert calls == ["2", "3"] and not (tmp_path / "ncf" / "old_output").exists()
    # a key ignores the config keys the stage does not depend on
    assert _ncf_stage(_cfg(trainer={"max_epochs": 3}, blend={"k": 5}), tmp_path, calls)
    assert calls == ["2", "3"]
    # reuse: false recomputes
    assert _ncf_stage(_cfg(trainer={"max_epochs": 3}, reuse=False), tmp_path, calls)
    assert calls == ["2", "3", "3"]


def test_outputs_choose_files_not_the_key_fewer_reuse_more_recompute(tmp_path, caplog):
    """`outputs` says which files a model stage writes, not what it computes: asking for fewer
    reuses the stage (its files stay), asking for one it never wrote recomputes it."""
    calls: list[str] = []
    caplog.set_level(logging.INFO, logger="experiments.stages")
    both = {"model": True, "plots": True, "plot_method": "umap"}
    _ncf_stage(_cfg(outputs=both), tmp_path, calls)
    assert json.loads((tmp_path / "ncf" / "stage.json").read_text())["outputs"] == both
    _ncf_stage(_cfg(outputs={**both, "plots": False}), tmp_path, calls)
    assert calls == ["2"] and "reused ncf" in caplog.text  # fewer: reused
    _ncf_stage(_cfg(outputs={**both, "embeddings": True}), tmp_path, calls)
    assert calls == ["2", "2"] and "asks for files its run did not write" in caplog.text
    _ncf_stage(_cfg(outputs={**both, "embeddings": True, "plot_method": "pca"}), tmp_path, calls)
    assert calls == ["2", "2", "2"]  # another setting of a written output: recomputed
    # the glmix stage follows the same rule; the downstream key does not move with outputs
    keys = []
    for model in (True, False):
        stages = Stages(_cfg(outputs={"model": model}), tmp_path)
        stages.fingerprint = "f" * 64
        keys.append(stages.key("glmix"))
    assert keys[0] == keys[1]


def test_a_two_tower_output_switched_on_does_not_recompute_glmix(tmp_path):
    """GLMix writes no embeddings or plots: asking for them recomputed it with the two-tower."""
    calls: list[str] = []

    def glmix_stage(outputs: dict) -> None:
        stages = Stages(_cfg(outputs=outputs), tmp_path)
        stages.fingerprint = "f" * 64
        stages.run("glmix", tmp_path / "glmix", lambda f: calls.append("glmix"), load=lambda f: {})

    written = {"model": True, "test_scores": False, "embeddings": False, "plots": False}
    glmix_stage(written)
    record = json.loads((tmp_path / "glmix" / "stage.json").read_text())
    assert record["outputs"] == {"model": True, "test_scores": False}  # what GLMix reads
    glmix_stage({**written, "embeddings": True, "plots": True, "plot_method": "pca"})
    assert calls == ["glmix"]  # reused
    glmix_stage({**written, "test_scores": True})  # a GLMix file it never wrote
    assert calls == ["glmix", "glmix"]


def test_stale_stages_follow_upstream_keys_through_the_chain(tmp_path):
    """A done stage whose record names an upstream key other than the upstream's record now
    is stale, and so is what was computed from it; a stage not done is not judged."""
    from experiments.stages import RECORD_PATHS, stale_stages

    def record(stage, key, status="done", **upstream):
        path = tmp_path / RECORD_PATHS[stage]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "status": status, "upstream": upstream}))

    record("ncf", "n1"), record("glmix", "g1"), record("blend_models", "m1")
    record("blend", "b1", ncf="n1", glmix="g1", blend_models="m1")
    record("evaluate", "e1", ncf="n1", glmix="g1")
    record("export", "x1", blend="b1")
    assert stale_stages(tmp_path) == {}
    record("glmix", "g2")  # retrained in the folder
    assert stale_stages(tmp_path) == {
        "blend": ["glmix"], "evaluate": ["glmix"], "export": ["blend"],
    }  # fmt: skip
    record("blend", "b2", ncf="n1", glmix="g2", blend_models="m1")  # the blend rerun
    assert stale_stages(tmp_path) == {"evaluate": ["glmix"], "export": ["blend"]}
    record("export", "x1", status="running", blend="b1")
    assert stale_stages(tmp_path) == {"evaluate": ["glmix"]}


def test_outputs_cover_reads_switches_and_settings():
    from experiments.stages import outputs_cover

    written = {"model": True, "plots": False, "plot_method": "umap", "neighbour_course": None}
    assert outputs_cover(written, {"model": False, "plots": False, "plot_method": "umap",
                                   "neighbour_course": None})  # fmt: skip
    assert not outputs_cover(written, {**written, "plots": True})
    assert not outputs_cover(written, {**written, "neighbour_course": "c7"})
    assert not outputs_cover(None, {"model": True})  # a record without outputs
    assert outputs_cover(None, {}) and outputs_cover(None, None)


def test_a_stage_reused_from_other_code_is_warned_and_named_in_the_summary(
    tmp_path, caplog, monkeypatch
):
    """Code is not part of the key; the record keeps the code version that computed the
    stage, and a reuse across code versions says so (log and manifest summary)."""
    import experiments.stages as stages_mod

    calls: list[str] = []
    monkeypatch.setattr(stages_mod, "code_version", lambda: "abc1234")
    _ncf_stage(_cfg(), tmp_path, calls)
    assert json.loads((tmp_path / "ncf" / "stage.json").read_text())["code_version"] == "abc1234"
    caplog.set_level(logging.INFO, logger="experiments.stages")
    same = Stages(_cfg(), tmp_path)
    same.fingerprint = "f" * 64
    same.run("ncf", tmp_path / "ncf", lambda f: calls.append("again"))
    assert calls == ["2"] and "computed by code" not in caplog.text
    assert same.summary()["ncf"] == {
        "key": same.keys["ncf"],
        "reused": True,
        "code_version": "abc1234",
    }
    monkeypatch.setattr(stages_mod, "code_version", lambda: "def5678-dirty")
    later = Stages(_cfg(), tmp_path)
    later.fingerprint = "f" * 64
    later.run("ncf", tmp_path / "ncf", lambda f: calls.append("again"))
    assert calls == ["2"]  # still reused: code is not in the key
    assert "reused ncf (key" in caplog.text and "computed by code abc1234" in caplog.text
    assert "this run's code is def5678-dirty" in caplog.text
    assert later.summary()["ncf"]["code_version"] == "abc1234"  # what computed the outputs
    assert [r.levelname for r in caplog.records if "computed by code" in r.message] == ["WARNING"]


def test_killed_stage_resumes_in_its_folder_and_other_data_is_another_key(tmp_path):
    stages = Stages(_cfg(), tmp_path)
    stages.fingerprint = "a" * 64

    def killed(folder: Path):
        (folder / "checkpoint").write_text("epoch 0")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stages.run("ncf", tmp_path / "ncf", killed)
    record = json.loads((tmp_path / "ncf" / "stage.json").read_text())
    assert record["status"] == "running"
    seen = []
    stages.run("ncf", tmp_path / "ncf", lambda f: seen.append((f / "checkpoint").read_text()))
    assert seen == ["epoch 0"]  # the folder was kept for the resume
    key = stages.keys["ncf"]
    stages.fingerprint = "b" * 64
    assert stages.key("ncf") != key


def test_failed_stage_records_its_error_and_resumes_like_a_killed_one(tmp_path):
    stages = Stages(_cfg(), tmp_path)
    stages.fingerprint = "a" * 64

    def fails(folder: Path):
        (folder / "checkpoint").write_text("epoch 3")
        raise ValueError("no labels in the validation window")

    with pytest.raises(ValueError):
        stages.run("ncf", tmp_path / "ncf", fails)
    record = json.loads((tmp_path / "ncf" / "stage.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == "ValueError: no labels in the validation window"
    seen = []
    stages.run("ncf", tmp_path / "ncf", lambda f: seen.append((f / "checkpoint").read_text()))
    assert seen == ["epoch 3"]


def test_evaluation_is_recomputed_when_a_model_it_skipped_is_saved_since(tmp_path):
    """A run with outputs.model=false evaluates no model (none saved); the same run with
    outputs.model=true saves the models (the stage recomputed, same key) and so evaluates
    them again. Asking for fewer outputs afterwards keeps both."""
    calls: list[str] = []

    def pipeline(model: bool) -> None:
        stages = Stages(_cfg(outputs={"model": model}, evaluate={"ci": 0.95}), tmp_path)
        stages.fingerprint = "f" * 64
        for name in ("ncf", "glmix"):
            stages.run(name, tmp_path / name, lambda f, n=name: calls.append(n), load=lambda f: {})
        stages.run("evaluate", tmp_path / "evaluation", lambda f: calls.append("evaluate"),
                   load=lambda f: {})  # fmt: skip

    pipeline(model=False)
    pipeline(model=True)
    assert calls == ["ncf", "glmix", "evaluate"] * 2
    pipeline(model=False)  # fewer outputs: the saved models stay, so does their evaluation
    assert calls == ["ncf", "glmix", "evaluate"] * 2 and stale_stages(tmp_path) == {}
    # the two-tower alone saved since (as `train_ncf run_dir=... outputs.model=true` after a
    # run without models): its evaluation is out of date
    (tmp_path / "ncf" / "stage.json").unlink()
    (tmp_path / "evaluation" / "stage.json").unlink()
    pipeline(model=False)
    stages = Stages(_cfg(outputs={"model": True}), tmp_path)
    stages.fingerprint = "f" * 64
    stages.run("ncf", tmp_path / "ncf", lambda f: None, load=lambda f: {})
    assert stale_stages(tmp_path) == {"evaluate": ["ncf"]}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_failed_recompute_puts_the_previous_outputs_back(tmp_path, caplog):
    """A rerun with another key that fails leaves the last finished outputs as they were
    (same bytes, record still done with their key); one with the same key then reuses them."""
    calls: list[str] = []
    _ncf_stage(_cfg(), tmp_path, calls)
    (tmp_path / "ncf" / "model").mkdir()
    (tmp_path / "ncf" / "model" / "weights").write_bytes(b"trained")
    before = _files(tmp_path / "ncf")
    stages = Stages(_cfg(trainer={"max_epochs": 3}), tmp_path)
    stages.fingerprint = "f" * 64

    def fails(folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text("half")  # written as it goes, then it fails
        raise ValueError("plot_method: unknown")

    with pytest.raises(ValueError, match="plot_method"):
        stages.run("ncf", tmp_path / "ncf", fails)
    assert _files(tmp_path / "ncf") == before
    assert not (tmp_path / ".ncf.previous").exists()
    assert "outputs of its last finished run are back" in caplog.text
    _ncf_stage(_cfg(), tmp_path, calls)
    assert calls == ["2"]  # reused: still the old key's outputs
    # a recompute that succeeds replaces them and leaves nothing aside
    _ncf_stage(_cfg(trainer={"max_epochs": 3}), tmp_path, calls)
    assert calls == ["2", "3"] and not (tmp_path / "ncf" / "model").exists()
    assert not (tmp_path / ".ncf.previous").exists()


def test_a_killed_recompute_keeps_the_previous_outputs_aside_until_it_is_done(tmp_path):
    """Killed while recomputing with another key: the same command resumes from its
    checkpoint; had it failed instead, the last finished outputs come back."""
    calls: list[str] = []
    _ncf_stage(_cfg(), tmp_path, calls)
    before = _files(tmp_path / "ncf")
    stages = Stages(_cfg(trainer={"max_epochs": 3}), tmp_path)
    stages.fingerprint = "f" * 64

    def killed(folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "checkpoint").write_text("epoch 1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stages.run("ncf", tmp_path / "ncf", killed)
    assert _files(tmp_path / ".ncf.previous") == before

    def fails_on_resume(folder: Path):
        assert (folder / "checkpoint").read_text() == "epoch 1"  # resumed in its folder
        raise ValueError("diverged")

    with pytest.raises(ValueError):
        stages.run("ncf", tmp_path / "ncf", fails_on_resume)
    assert _files(tmp_path / "ncf") == before
    with pytest.raises(KeyboardInterrupt):
        stages.run("ncf", tmp_path / "ncf", killed)
    stages.run("ncf", tmp_path / "ncf", lambda f: (f / "checkpoint").read_text())
    assert json.loads((tmp_path / "ncf" / "stage.json").read_text())["status"] == "done"
    assert (tmp_path / "ncf" / "checkpoint").exists()
    assert not (tmp_path / ".ncf.previous").exists()


# ---- the pipeline (slow) ------------------------------------------------------------------------
def _command(out: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "experiments.pipeline", *SMALL, f"paths.output_dir={out}",
        f"hydra.run.dir={out}", f"export.sink.path={out / 'lists'}", *overrides,
    ]  # fmt: skip


def _run(out: Path, *overrides: str) -> str:
    """Run the pipeline; its log (Hydra sends log lines to stdout)."""
    res = subprocess.run(_command(out, *overrides), cwd=ROOT, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout + res.stderr


def _metrics(out: Path) -> dict:
    return json.loads((out / "run_manifest.json").read_text())["metrics"]


def _kill_when(out: Path, path: Path, *overrides: str) -> None:
    """Start the pipeline, SIGKILL it as soon as `path` exists."""
    proc = subprocess.Popen(_command(out, *overrides), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not path.exists():
            assert proc.poll() is None, f"the pipeline ended before {path} appeared"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_unchanged_rerun_reuses_every_stage_and_a_trainer_change_retrains_ncf(tmp_path):
    out = tmp_path / "run"
    first = _run(out)
    model = out / "ncf" / "model" / "weights.pt"
    mtimes = {p: p.stat().st_mtime_ns for p in (model, out / "glmix" / "model" / "arrays.npz")}
    again = _run(out)
    for stage in ("data", "ncf", "glmix", "blend_models", "blend", "evaluate", "export"):
        assert f"reused {stage} (key " in again, stage
        assert f"reused {stage} (key " not in first
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    stages = json.loads((out / "run_manifest.json").read_text())["stages"]
    assert all(s["reused"] for s in stages.values())
    changed = _run(out, "trainer.max_epochs=3")
    assert "reused data (key " in changed and "reused glmix (key " in changed
    assert "reused ncf (key " not in changed
    assert model.stat().st_mtime_ns != mtimes[model]
    assert _metrics(out)["ncf"]["best_epoch"] <= 2


@pytest.mark.slow
def test_killed_during_two_tower_training_resumes_to_the_same_metrics(tmp_path):
    overrides = ("trainer.max_epochs=4", "stages.blend=false", "stages.export=false")
    _run(tmp_path / "whole", *overrides)
    for attempt in range(3):  # a poller starved on a loaded machine can see last.ckpt late
        out = tmp_path / f"killed{attempt}"
        _kill_when(out, out / "ncf" / "checkpoints" / "last.ckpt", *overrides)
        if not (out / "ncf" / "checkpoints" / "fit_done.json").exists():
            break  # killed mid-fit, as wanted
    else:
        pytest.fail("the two-tower fit finished before the kill, three times")
    again = _run(out, *overrides)
    assert "resuming the two-tower fit from" in again
    assert "epoch 1/4" not in again  # from the killed epoch on, not from the start again
    whole, resumed = _metrics(tmp_path / "whole"), _metrics(out)
    assert resumed["ncf"] == whole["ncf"] and resumed["glmix"] == whole["glmix"]


@pytest.mark.slow
def test_killed_during_glmix_resumes_to_the_same_model(tmp_path):
    overrides = ("stages.blend=false", "stages.export=false", "glmix.model.passes=10")
    _run(tmp_path / "whole", *overrides)
    out = tmp_path / "killed"
    _kill_when(out, out / "glmix" / "glmix_selected.state.npz", *overrides)
    assert json.loads((out / "glmix" / "stage.json").read_text())["status"] == "running"
    again = _run(out, *overrides)
    assert "reused ncf (key " in again
    whole, resumed = _metrics(tmp_path / "whole"), _metrics(out)
    assert resumed["glmix"] == whole["glmix"]
    history = json.loads((out / "glmix" / "metrics.json").read_text())["history"]
    reference = json.loads((tmp_path / "whole" / "glmix" / "metrics.json").read_text())["history"]
    assert [h["val_auc"] for h in history] == [h["val_auc"] for h in reference]
