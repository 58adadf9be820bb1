"""A two-tower fit stopped after an epoch and resumed from `checkpoints/last.ckpt` ends with
the weights and metrics of an uninterrupted fit (exactly, on CPU); a damaged checkpoint is
not resumed from. The SIGKILL version of this is in tests/test_pipeline_resume.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from experiments.train_ncf import fit
from ncf.checkpointing import loadable_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def compose_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train_ncf",
            overrides=[
                "data=synthetic_small", f"paths.output_dir={tmp_path}", "trainer.max_epochs=3",
                "trainer.enable_progress_bar=false", "outputs.plots=false", "ncf.patience=1",
                *overrides,
            ],
        )  # fmt: skip


def _weights(trained) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trained.recommender.model.state_dict().items()}


@pytest.mark.parametrize("averaging", ["ncf.ema_decay=null", "ncf.ema_decay=0.9"])
def test_resumed_fit_ends_like_an_uninterrupted_one(tmp_path, averaging):
    """With weight averaging the average resumes too (Lightning's WeightAveraging keeps it
    in last.ckpt): the same weights, checkpoint and metrics as the uninterrupted fit."""
    whole = fit(compose_cfg(tmp_path / "whole", averaging), resume=True)
    # "Crash" after the first epoch: a 1-epoch fit leaves last.ckpt of epoch 0; without its
    # done marker the next call resumes from it and trains epochs 1 and 2.
    part = tmp_path / "part"
    fit(compose_cfg(part, "trainer.max_epochs=1", averaging), resume=True)
    ckpt = part / "checkpoints"
    loops = torch.load(ckpt / "last.ckpt", weights_only=True)["loops"]
    # written as epoch 0 ends (at its validation): processed, and not yet marked completed
    assert loops["fit_loop"]["epoch_progress"]["current"]["processed"] == 1
    (ckpt / "fit_done.json").unlink()
    resumed = fit(compose_cfg(part, averaging), resume=True)
    assert resumed.result.epochs_run == whole.result.epochs_run
    assert resumed.result.valid == whole.result.valid
    assert resumed.result.test == whole.result.test
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished fit is not run again: the same result from its done marker
    done = json.loads((ckpt / "fit_done.json").read_text())
    again = fit(compose_cfg(part, averaging), resume=True)
    assert again.result.test == whole.result.test and done["epochs_run"] == 3


def test_unreadable_last_checkpoint_is_set_aside(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    assert not loadable_checkpoint(path)
    trained = fit(compose_cfg(tmp_path, "trainer.max_epochs=1"), resume=True)
    assert trained.result.epochs_run == 1
    assert (tmp_path / "checkpoints" / "last.unreadable").exists()
    assert loadable_checkpoint(path)


def test_last_checkpoint_is_written_after_every_epoch(tmp_path, monkeypatch):
    """A SIGKILL can come at any epoch: last.ckpt must hold the latest one throughout, not
    only appear when the fit ends (Lightning's save_last with save_top_k=0 did that)."""
    from ncf.checkpointing import AtomicCheckpointIO

    saved, real = [], AtomicCheckpointIO.save_checkpoint

    def spy(self, checkpoint, path, storage_options=None):
        if Path(path).name == "last.ckpt":
            saved.append(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"])
        return real(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", spy)
    trained = fit(compose_cfg(tmp_path, "ncf.patience=10"), resume=True)
    assert trained.result.epochs_run == 3
    assert saved[:3] == [0, 1, 2]  # one per epoch, as it ends (then at train end)


def test_the_epoch_log_of_a_resumed_fit_keeps_the_best_so_far(tmp_path, monkeypatch, caplog):
    """The "(best ...)" of the one-line-per-epoch log starts from the restored checkpoint
    callback's best score (it restarted from the first epoch after the resume)."""
    import logging

    monkeypatch.setenv("NCF_GLMIX_PROGRESS", "log")  # the EpochLog, not Lightning's bar
    part = tmp_path / "part"
    fit(compose_cfg(part, "trainer.max_epochs=1"), resume=True)
    ckpt = part / "checkpoints"
    (ckpt / "fit_done.json").unlink()
    state = torch.load(ckpt / "last.ckpt", weights_only=True)
    (key,) = [k for k in state["callbacks"]  # the best-epoch one, not last.ckpt's own
              if k.startswith("ModelCheckpoint{'monitor': 'val_ndcg@10'")]  # fmt: skip
    state["callbacks"][key]["best_model_score"] = torch.tensor(0.99)  # a better earlier epoch
    torch.save(state, ckpt / "last.ckpt")
    with caplog.at_level(logging.INFO, logger="ncf.epoch_log"):
        fit(compose_cfg(part, "trainer.max_epochs=2"), resume=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "ncf.epoch_log"]
    assert lines and lines[0].startswith("epoch 2/2:") and lines[0].endswith("(best 0.9900)")
