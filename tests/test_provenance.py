"""experiments.provenance: code_version is dirty when code changes, not when results do;
machine() names the CPU model."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from experiments import provenance


@pytest.fixture
def repo(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "_REPO", tmp_path)
    return tmp_path


def test_a_changed_results_file_is_not_a_code_change(repo):
    clean = provenance.code_version()
    assert clean and not clean.endswith("-dirty")
    (repo / "benchmarks" / "results" / "r.json").write_text('{"new": 1}\n')
    (repo / "untracked.txt").write_text("scratch")
    assert provenance.code_version() == clean
    (repo / "code.py").write_text("x = 2\n")
    assert provenance.code_version() == f"{clean}-dirty"


def test_outside_a_checkout_the_version_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_REPO", tmp_path)  # no .git here: git describe fails
    monkeypatch.setenv("NCF_GLMIX_CODE_VERSION", "abc1234")
    assert provenance.code_version() == "abc1234"
    monkeypatch.delenv("NCF_GLMIX_CODE_VERSION")
    assert provenance.code_version() != "abc1234"  # the package version, or "unknown"


def test_in_a_checkout_git_wins_over_the_environment(repo, monkeypatch):
    monkeypatch.setenv("NCF_GLMIX_CODE_VERSION", "abc1234")
    assert provenance.code_version() not in ("abc1234", "")


def test_machine_names_the_cpu_model(tmp_path):
    """Results from two boxes of one architecture ('x86_64') must be told apart."""
    from experiments.provenance import _cpu_model, machine

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU @ 2.0GHz\n")
    assert _cpu_model(str(info)) == "Some CPU @ 2.0GHz"
    assert _cpu_model(str(tmp_path / "missing")) is None
    assert "cpu_model" in machine()


def test_a_password_given_on_the_command_line_is_not_written_to_the_manifest(tmp_path):
    """A run_dir command's overrides go into run_manifest.json "updates": a database URL's
    password among them is masked as the resolved config's is."""
    import json

    (tmp_path / "run_manifest.json").write_text(json.dumps({"config": {}}))
    overrides = [
        f"run_dir={tmp_path}",
        "export.sink.kind=postgresql",
        "export.sink.url=postgresql://u:secretpw@db.example:5432/recs",
        "'export.sink.url=postgresql://u:secret=pw@db.example/recs'",
        "~trainer.callbacks.early_stopping",
    ]
    provenance.update_manifest(
        tmp_path, {}, "export", None, stages={}, overrides=overrides, stale={}
    )
    text = (tmp_path / "run_manifest.json").read_text()
    assert "secretpw" not in text and "secret=pw" not in text
    written = json.loads(text)["updates"][-1]["overrides"]
    assert written[:2] == overrides[:2] and written[-1] == overrides[-1]
    assert written[2] == "export.sink.url=postgresql://u:***@db.example:5432/recs"
