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


def test_machine_names_the_cpu_model(tmp_path):
    """Results from two boxes of one architecture ('x86_64') must be told apart."""
    from experiments.provenance import _cpu_model, machine

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU @ 2.0GHz\n")
    assert _cpu_model(str(info)) == "Some CPU @ 2.0GHz"
    assert _cpu_model(str(tmp_path / "missing")) is None
    assert "cpu_model" in machine()
