"""The model stages retrained inside a finished pipeline run's folder (`run_dir=` of
`experiments.train_ncf` / `experiments.train_glmix`, `experiments.retrain`): the run's settings
changed by the command line's stage keys alone, through the folder's stage records."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments import train_glmix, train_ncf
from experiments.pipeline import run as run_pipeline
from experiments.retrain import merge_stage_settings
from tests.pipeline_fakes import FAST, ROOT, compose_cfg, rerun

BLEND_FAST = [o for o in FAST if o.startswith("blend.")]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline")
    run_pipeline(
        compose_cfg(
            "pipeline", *FAST, f"paths.output_dir={out}", "stages.export=false",
            "stages.report=false",
        )
    )  # fmt: skip
    return out


@pytest.fixture
def run_dir(pipeline_run, tmp_path) -> Path:
    """A fresh copy of the pipeline run: each test changes its folder."""
    return Path(shutil.copytree(pipeline_run, tmp_path / "run"))


def _retrain(module, name: str, run_dir: Path, *overrides: str) -> dict:
    overrides = (f"run_dir={run_dir}", *overrides)
    return module.run(compose_cfg(name, *overrides), list(overrides))


def _record(folder: Path) -> dict:
    return json.loads((folder / "stage.json").read_text())


def _resolved(run_dir: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(run_dir / "resolved_config.yaml"))


def test_retraining_ncf_replaces_the_stage_and_the_blend_uses_it(run_dir, caplog):
    from experiments.blend import run as run_blend

    caplog.set_level(logging.WARNING, logger="experiments.stages")
    before = _resolved(run_dir)
    old_blend = json.loads((run_dir / "blend" / "metrics.json").read_text())
    old_ncf, old_early = _record(run_dir / "ncf"), _record(run_dir / "blend_models")
    assert before["trainer"]["max_epochs"] == 2

    metrics = _retrain(train_ncf, "train_ncf", run_dir, "trainer.max_epochs=1")

    assert metrics["epochs_run"] == 1
    assert json.loads((run_dir / "ncf" / "metrics.json").read_text())["epochs_run"] == 1
    new_ncf = _record(run_dir / "ncf")
    assert new_ncf["status"] == "done" and new_ncf["key"] != old_ncf["key"]
    assert new_ncf["data_fingerprint"] == old_ncf["data_fingerprint"]  # same saved data
    # the blend models are fitted with the two-tower's settings: refitted too
    assert _record(run_dir / "blend_models")["key"] != old_early["key"]
    after = _resolved(run_dir)
    assert after["trainer"]["max_epochs"] == 1
    # only the key given changed: the rest of the run (this command's defaults included) stays
    after["trainer"]["max_epochs"] = 2
    assert after == before
    # the run's manifest says what the folder holds now, and what is out of date
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["metrics"]["ncf"]["test"] == pytest.approx(metrics["test"], nan_ok=True)
    assert manifest["config"]["trainer"]["max_epochs"] == 1
    assert manifest["stages"]["ncf"]["key"] == new_ncf["key"]
    assert [(u["stage"], u["overrides"]) for u in manifest["updates"]] == [
        ("ncf", [f"run_dir={run_dir}", "trainer.max_epochs=1"])
    ]
    assert manifest["stale"] == {"blend": ["ncf", "blend_models"], "evaluate": ["ncf"]}
    assert "blend in" in caplog.text and "experiments.blend run_dir=" in caplog.text
    from experiments.report import build_report

    page = build_report(run_dir).read_text()
    assert '<section id="blend" data-status="stale">' in page
    assert '<section id="evaluation" data-status="stale">' in page
    assert '<section id="ncf" data-status="stale">' not in page

    blended = rerun(run_blend, "blend", f"run_dir={run_dir}", *BLEND_FAST)
    written = json.loads((run_dir / "blend" / "metrics.json").read_text())
    assert written["chosen"] == blended["chosen"]
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["stale"] == {"evaluate": ["ncf"]}  # the blend is up to date again
    assert manifest["metrics"]["blend"]["test"] == written["test"]
    assert [u["stage"] for u in manifest["updates"]] == ["ncf", "blend"]

    def two_tower(m):  # the retrained model's own row among the blend's test systems
        return next(r for r in m["test"] if r["system"] == "two_tower")

    assert two_tower(written)["ndcg@10"] != two_tower(old_blend)["ndcg@10"]

    # the same command again: nothing to do
    model = run_dir / "ncf" / "model"
    mtimes = {p: p.stat().st_mtime_ns for p in model.rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="experiments.stages"):
        again = _retrain(train_ncf, "train_ncf", run_dir, "trainer.max_epochs=1")
    assert "reused ncf" in caplog.text and "reused blend_models" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in model.rglob("*") if p.is_file()} == mtimes
    assert again["test"] == pytest.approx(metrics["test"], nan_ok=True)
    assert _record(run_dir / "ncf")["key"] == new_ncf["key"]


def test_retraining_glmix_with_other_settings_then_reusing_them(run_dir, caplog):
    old = _record(run_dir / "glmix")
    old_history = json.loads((run_dir / "glmix" / "metrics.json").read_text())["history"]
    assert _resolved(run_dir)["glmix"]["model"]["passes"] == 2

    metrics = _retrain(train_glmix, "train_glmix", run_dir, "glmix.model.passes=1")

    # one pass of coordinate descent instead of two
    assert max(h["pass"] for h in metrics["history"]) == max(h["pass"] for h in old_history) - 1
    new = _record(run_dir / "glmix")
    assert new["key"] != old["key"]
    assert _resolved(run_dir)["glmix"]["model"]["passes"] == 1
    history = json.loads((run_dir / "glmix" / "metrics.json").read_text())["history"]
    assert len(history) == len(metrics["history"]) < len(old_history)

    with caplog.at_level(logging.INFO, logger="experiments.stages"):
        _retrain(train_glmix, "train_glmix", run_dir, "glmix.model.passes=1")
    assert "reused glmix" in caplog.text
    assert _record(run_dir / "glmix")["key"] == new["key"]


def test_the_command_line_form_passes_its_overrides(run_dir, tmp_path):
    old = _record(run_dir / "glmix")["key"]
    out = subprocess.run(
        [sys.executable, "-m", "experiments.train_glmix", f"run_dir={run_dir}",
         "glmix.model.passes=1", f"hydra.run.dir={tmp_path / 'job'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "retrained glmix" in out.stdout
    assert _record(run_dir / "glmix")["key"] != old
    assert _resolved(run_dir)["glmix"]["model"]["passes"] == 1


def test_an_unchanged_run_is_reused_as_the_pipeline_keyed_it(run_dir, caplog):
    """No override: the run's own settings, keyed from its resolved config and saved data
    exactly as the pipeline keyed them from its composed config."""
    model = run_dir / "ncf" / "model"
    mtimes = {p: p.stat().st_mtime_ns for p in model.rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="experiments.stages"):
        _retrain(train_ncf, "train_ncf", run_dir)
    assert "reused ncf" in caplog.text and "reused blend_models" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in model.rglob("*") if p.is_file()} == mtimes


def test_asking_for_fewer_outputs_reuses_the_trained_model(run_dir, caplog):
    """`outputs.*` choose files, not the model: switching one off reuses the stage."""
    model = run_dir / "ncf" / "model"
    mtimes = {p: p.stat().st_mtime_ns for p in model.rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="experiments.stages"):
        _retrain(train_ncf, "train_ncf", run_dir, "outputs.model=false")
        _retrain(train_glmix, "train_glmix", run_dir, "outputs.model=false")
    assert "reused ncf" in caplog.text and "reused glmix" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in model.rglob("*") if p.is_file()} == mtimes
    assert _resolved(run_dir)["outputs"]["model"] is False  # the run's config says so
    assert (run_dir / "glmix" / "model").is_dir()  # and the files written before stay


def test_reuse_false_retrains_unchanged_settings_and_the_run_keeps_its_reuse(run_dir, caplog):
    """After a code change: `reuse=false` retrains a model stage in place; the run's own
    `reuse` stays in its config, so the next command reuses again."""
    before = (run_dir / "glmix" / "stage.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="experiments.stages"):
        _retrain(train_glmix, "train_glmix", run_dir, "reuse=false")
    assert "reused glmix" not in caplog.text
    assert (run_dir / "glmix" / "stage.json").stat().st_mtime_ns != before
    assert _resolved(run_dir)["reuse"] is True
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="experiments.stages"):
        _retrain(train_glmix, "train_glmix", run_dir)
    assert "reused glmix" in caplog.text


def test_a_folder_that_is_no_pipeline_run_is_refused(run_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no resolved config .*resolved_config.yaml"):
        _retrain(train_ncf, "train_ncf", empty)
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    shutil.copy(run_dir / "resolved_config.yaml", only_config)
    with pytest.raises(FileNotFoundError, match="no saved event log .*eventlog"):
        _retrain(train_glmix, "train_glmix", only_config)


def test_keys_the_run_fixes_are_refused_and_nothing_is_written(run_dir):
    before = (run_dir / "resolved_config.yaml").read_text()
    with pytest.raises(ValueError, match=r"split\.fn\.valid_days=5.*only keys under"):
        _retrain(train_ncf, "train_ncf", run_dir, "split.fn.valid_days=5")
    with pytest.raises(ValueError, match=r"data=synthetic.*only keys under \['glmix'"):
        _retrain(train_glmix, "train_glmix", run_dir, "glmix.model.passes=1", "data=synthetic")
    with pytest.raises(ValueError, match="needs the command line's overrides"):
        train_ncf.run(compose_cfg("train_ncf", f"run_dir={run_dir}"))
    assert (run_dir / "resolved_config.yaml").read_text() == before


def test_merge_takes_only_the_given_keys_and_whole_groups_for_group_choices():
    run_cfg = compose_cfg("pipeline", "trainer.max_epochs=2", "trainer.enable_progress_bar=false")
    overrides = ["ncf=mf", "trainer.max_epochs=3", "~trainer.callbacks.early_stopping"]
    cfg = compose_cfg("train_ncf", "run_dir=x", *overrides)
    merged = merge_stage_settings(run_cfg, cfg, ["run_dir=x", *overrides], "ncf")

    def plain(node):
        return OmegaConf.to_container(node, resolve=False)

    assert plain(merged.ncf) == plain(cfg.ncf) != plain(run_cfg.ncf)  # the group, whole
    assert merged.trainer.max_epochs == 3 and merged.seed == run_cfg.seed
    assert merged.trainer.enable_progress_bar is False  # the run's, not this command's default
    assert "early_stopping" not in merged.trainer.callbacks
    assert "checkpoint" in merged.trainer.callbacks
    assert plain(merged.glmix) == plain(run_cfg.glmix) and "run_dir" not in merged
    # the seed drew the run's data too: not a model stage's to change
    with pytest.raises(ValueError, match=r"\['seed=4'\] would change what the run fixes"):
        merge_stage_settings(run_cfg, compose_cfg("train_ncf", "seed=4"), ["seed=4"], "ncf")
    # nothing given: the run's config as it was
    untouched = merge_stage_settings(run_cfg, compose_cfg("train_ncf"), [], "ncf")
    assert plain(untouched) == plain(run_cfg)


def test_the_report_command_builds_the_page(run_dir, tmp_path):
    """`python -m experiments.report run_dir=...` as the README gives it (it lacked `paths`)."""
    (run_dir / "report.html").unlink(missing_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "experiments.report", f"run_dir={run_dir}",
         f"hydra.run.dir={tmp_path / 'job'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run_dir / "report.html").stat().st_size > 0


def test_blend_run_dir_changes_only_the_keys_given(run_dir):
    """The run's blend settings stay (its candidates, bootstrap, grid); only blend.serve
    changes; the stage's record and resolved_config.yaml say so."""
    from experiments.blend import run as run_blend

    before, old = _resolved(run_dir)["blend"], _record(run_dir / "blend")
    m = rerun(run_blend, "blend", f"run_dir={run_dir}", "blend.serve=logistic")
    after = _resolved(run_dir)["blend"]
    assert m["serve"] == "logistic" and after["serve"] == "logistic"
    assert {k: v for k, v in after.items() if k != "serve"} == {
        k: v for k, v in before.items() if k != "serve"
    }
    assert after["candidates"]["n_retrieve"] != 200  # the run's (FAST), not conf/blend's default
    record = _record(run_dir / "blend")
    assert record["status"] == "done" and record["key"] != old["key"]
    with pytest.raises(ValueError, match=r"\['\+seed=3'\] would change what the run fixes"):
        rerun(run_blend, "blend", f"run_dir={run_dir}", "+seed=3")


def test_the_saved_config_holds_no_database_password(tmp_path, monkeypatch):
    from experiments.provenance import write_resolved_config

    monkeypatch.setenv("NCF_GLMIX_EXPORT_URL", "postgresql://u:secretpw@db.example:5432/recs")
    cfg = compose_cfg("pipeline", "export.sink.kind=postgresql", f"paths.output_dir={tmp_path}")
    write_resolved_config(tmp_path, cfg)
    text = (tmp_path / "resolved_config.yaml").read_text()
    assert "secretpw" not in text and "postgresql://u:***@db.example:5432/recs" in text


def test_merge_relinks_the_copies_a_saved_config_lost(monkeypatch):
    """A saved (resolved) config holds export.publish.gates as a copy of export.gates: an
    override of export.gates reaches it; a redacted URL is read from the environment again;
    a copy the run had set apart stays."""
    from omegaconf import OmegaConf

    monkeypatch.setenv("NCF_GLMIX_EXPORT_URL", "postgresql://u:pw@h:5432/db")
    run = compose_cfg("pipeline", "export.sink.kind=postgresql", "paths.output_dir=/tmp/x")
    saved = OmegaConf.create(OmegaConf.to_container(run, resolve=True))  # as written
    saved.export.sink.url = "postgresql://u:***@h:5432/db"  # redacted on disk
    saved.export.publish.sink.url = "postgresql://u:***@h:5432/db"
    saved.trainer.callbacks.early_stopping.patience = 9  # set apart from ncf.patience
    overrides = ["export.gates.min_coverage=0.9"]
    cmd = compose_cfg("export", "run_dir=x", *overrides)
    merged = merge_stage_settings(saved, cmd, ["run_dir=x", *overrides], "export")
    assert merged.export.publish.gates.min_coverage == 0.9
    assert merged.export.sink.url == merged.export.publish.sink.url == "postgresql://u:pw@h:5432/db"
    assert merged.export.gates.k == saved.export.gates.k  # the run's served length
    ncf_cmd = compose_cfg("train_ncf", "run_dir=x", "ncf.patience=2")
    ncf = merge_stage_settings(saved, ncf_cmd, ["ncf.patience=2"], "ncf")
    assert ncf.trainer.callbacks.early_stopping.patience == 9  # the run's own, not relinked
    # a run made without the variable (it published Parquet): exporting to PostgreSQL from
    # its folder reads the variable now, as the README says
    saved.export.sink.url = saved.export.publish.sink.url = None
    pg = ["export.sink.kind=postgresql"]
    merged = merge_stage_settings(saved, compose_cfg("export", "run_dir=x", *pg), pg, "export")
    assert merged.export.sink.url == "postgresql://u:pw@h:5432/db"


def test_a_blend_k_change_reaches_the_export_gates_the_run_linked_to_it():
    """conf/pipeline.yaml links export.gates.k to blend.k; the saved config holds copies, and
    the blend command's config has no export keys. `blend.k=5` in run_dir mode changes the
    gates' k (and its saved copy export.publish.gates.k) so the export checks lists of 5; a
    gate k the run had set apart stays."""
    run = compose_cfg("pipeline", "paths.output_dir=/tmp/x")
    saved = OmegaConf.create(OmegaConf.to_container(run, resolve=True))  # as written
    assert saved.export.gates.k == saved.export.publish.gates.k == saved.blend.k == 10
    cmd = compose_cfg("blend", "run_dir=x", "blend.k=5")
    merged = merge_stage_settings(saved, cmd, ["run_dir=x", "blend.k=5"], "blend")
    assert merged.blend.k == merged.export.gates.k == merged.export.publish.gates.k == 5
    assert merged.export.gates.min_coverage == saved.export.gates.min_coverage
    unchanged = merge_stage_settings(saved, cmd, ["run_dir=x", "blend.serve=logistic"], "blend")
    assert unchanged.export.gates.k == 10
    saved.export.gates.k = saved.export.publish.gates.k = 20  # set apart by the run
    apart = merge_stage_settings(saved, cmd, ["run_dir=x", "blend.k=5"], "blend")
    assert apart.export.gates.k == apart.export.publish.gates.k == 20


def test_a_run_saves_absolute_paths_so_an_export_elsewhere_publishes_where_it_did(
    tmp_path, monkeypatch
):
    """A run made from directory A saves its list root under A (the default, built on
    paths.root_dir, and a relative `export.sink.path` given on its command line); the export
    command run from directory B with that run_dir publishes there, not under B."""
    from experiments.paths import pin_relative_paths
    from experiments.provenance import write_resolved_config

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    monkeypatch.delenv("NCF_GLMIX_DATA_ROOT", raising=False)  # CI sets it: data_root's default
    monkeypatch.chdir(a)
    for given, root in (
        ([], a / "outputs" / "lists"),
        (["export.sink.path=lists.db"], a / "lists.db"),
    ):
        run = compose_cfg("pipeline", f"paths.output_dir={a / 'run'}", *given)
        pin_relative_paths(run)  # as the pipeline does before it saves its config
        write_resolved_config(a / "run", run)
        saved = OmegaConf.load(a / "run" / "resolved_config.yaml")
        assert saved.paths.root_dir == str(a) and saved.paths.data_root == str(a / "data")
        assert saved.export.sink.path == saved.export.publish.sink.path == str(root)
        monkeypatch.chdir(b)
        cmd = compose_cfg("export", "run_dir=x")
        merged = merge_stage_settings(saved, cmd, ["run_dir=x"], "export")
        assert merged.export.publish.sink.path == str(root)
        monkeypatch.chdir(a)
    # a relative path given to the export command is this command's directory's
    monkeypatch.chdir(b)
    cmd = compose_cfg("export", "run_dir=x", "export.sink.path=here")
    merged = merge_stage_settings(saved, cmd, ["run_dir=x", "export.sink.path=here"], "export")
    pin_relative_paths(merged)
    assert merged.export.publish.sink.path == str(b / "here")


def test_a_trainer_choice_keeps_the_runs_epoch_budget(caplog):
    """`trainer=cpu` replaces the run's trainer group but not its max_epochs (it became the
    group's default, 60: six times the pipeline's 10); naming the key changes it."""
    run = compose_cfg("pipeline", "trainer.max_epochs=2", "paths.output_dir=/tmp/x")
    saved = OmegaConf.create(OmegaConf.to_container(run, resolve=True))  # as written
    overrides = ["run_dir=x", "trainer=cpu"]
    with caplog.at_level(logging.INFO, logger="experiments.retrain"):
        merged = merge_stage_settings(saved, compose_cfg("train_ncf", *overrides), overrides, "ncf")
    assert merged.trainer.accelerator == "cpu" and merged.trainer.max_epochs == 2
    assert "trainer.max_epochs: the run's 2 kept with the group choice" in caplog.text
    overrides = ["run_dir=x", "trainer=cpu", "trainer.max_epochs=5"]
    merged = merge_stage_settings(saved, compose_cfg("train_ncf", *overrides), overrides, "ncf")
    assert merged.trainer.max_epochs == 5
