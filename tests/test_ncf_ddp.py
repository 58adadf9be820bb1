"""Data-parallel two-tower training (trainer=ddp_cpu): the batch split, the loss scale, the
gathered evaluation, rank-0-only writing, GLMix in the same process group, and (slow) two
gloo processes against one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import experiments.train_glmix as train_glmix
from experiments.data import prepare_data
from experiments.ranks import global_rank, is_writer, process_group_size
from glmix import run_distributed
from ncf.batches import TrainBatches, shard_batch
from ncf.model import TwoTower
from ncf.module import NCFModule

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def compose_cfg(config: str, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config, overrides=["data=synthetic_small", *overrides])


# ---- the batch split and the loss scale -----------------------------------------------------
def test_shard_batch_partitions_the_batch_and_scales_sum_to_world_size():
    learners = np.arange(100, 111)  # 11 learners over 3 ranks: 4, 4, 3
    counted = np.ones(11, dtype=bool)
    counted[[0, 1, 9]] = False  # rows without labels do not count in the loss's mean
    shares = [shard_batch(learners, counted, r, 3) for r in range(3)]
    assert np.array_equal(np.concatenate([s for s, _ in shares]), learners)
    assert [len(s) for s, _ in shares] == [4, 4, 3]
    scales = [scale for _, scale in shares]
    assert scales == pytest.approx([3 * 2 / 8, 3 * 4 / 8, 3 * 2 / 8])
    assert sum(scales) == pytest.approx(3)


def test_shard_batch_gives_an_empty_share_scale_zero():
    share, scale = shard_batch(np.array([7]), np.array([True]), 1, 2)
    assert share.size == 0 and scale == 0.0
    with pytest.raises(ValueError, match="rank: must be in 0..1"):
        shard_batch(np.array([7]), np.array([True]), 2, 2)
    with pytest.raises(ValueError, match="counted: expected shape"):
        shard_batch(np.array([7, 8]), np.array([True]), 0, 2)


@pytest.fixture(scope="module")
def snapshots():
    cfg = compose_cfg("train_ncf", "paths.output_dir=unused", "ncf.model.dropout=0")
    data = prepare_data(cfg.data, cfg.split)
    inputs = instantiate(cfg.ncf.inputs, _convert_="all")
    dm = instantiate(cfg.ncf.datamodule, _convert_="all")(data.log, data.split, inputs)
    dm.setup()
    return cfg, data.log, dm


def _batches(dm, rank: int, world_size: int) -> list[dict]:
    data = TrainBatches(
        dm.train_snapshots, batch_size=dm.batch_size, seed=dm.seed, normalize=dm.normalize,
        denoise=dm.denoise_flags(dm.train_snapshots), label_fraction=dm.label_fraction,
        rank=rank, world_size=world_size,
    )  # fmt: skip
    return list(iter(data))


def test_ranks_draw_the_same_global_batches_and_split_them(snapshots):
    _, _, dm = snapshots
    one = _batches(dm, 0, 1)
    r0, r1 = _batches(dm, 0, 2), _batches(dm, 1, 2)
    assert len(one) == len(r0) == len(r1)  # the same number of steps on every rank
    for full, a, b in zip(one, r0, r1, strict=True):
        assert torch.equal(torch.cat([a["learners"], b["learners"]]), full["learners"])
        assert "loss_scale" not in full and a["loss_scale"] + b["loss_scale"] == pytest.approx(2)


def _grads(module: NCFModule, batch: dict) -> list[torch.Tensor]:
    module.zero_grad()
    batch = module.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    module.training_step(batch, 0).backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]


def test_averaged_scaled_share_gradients_equal_the_global_batch_gradient(snapshots):
    """What DDP computes, (1/W) sum_r grad(scale_r * loss_r), is one process's gradient."""
    cfg, log, dm = snapshots
    torch.manual_seed(0)
    model = instantiate(cfg.ncf.model, _convert_="all")(log.n_learners, log.n_courses)
    module = NCFModule(model, course_popularity=dm.course_popularity())
    module.log = lambda *args, **kwargs: None  # no Trainer here to log to
    one, r0, r1 = _batches(dm, 0, 1), _batches(dm, 0, 2), _batches(dm, 1, 2)
    checked_unequal = False
    for b in range(4):  # a few batches, of rolling and denoising snapshots
        full = _grads(module, one[b])
        ddp = [
            (g0 + g1) / 2
            for g0, g1 in zip(_grads(module, r0[b]), _grads(module, r1[b]), strict=True)
        ]
        for g, h in zip(full, ddp, strict=True):
            torch.testing.assert_close(h, g, rtol=1e-4, atol=1e-7)
        checked_unequal |= r0[b]["loss_scale"] != 1.0
    assert checked_unequal  # some share had fewer counted rows than the other: scale mattered


def test_a_share_with_nothing_to_count_gives_zero_gradients_on_every_parameter(snapshots):
    cfg, log, dm = snapshots
    model = instantiate(cfg.ncf.model, _convert_="all")(log.n_learners, log.n_courses)
    module = NCFModule(model)
    batch = {**_batches(dm, 0, 2)[0], "loss_scale": 0.0}
    module.zero_grad()
    module.training_step(batch, 0).backward()
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())


# ---- the gathered evaluation -------------------------------------------------------------------
def _gather_worker(rank: int, world_size: int, out: str) -> None:
    module = NCFModule(TwoTower(9, 5))
    module._trainer = SimpleNamespace(world_size=world_size)  # what _gather_eval reads
    mine = np.arange(9)[rank::world_size]  # strided shares, as the datamodule makes them
    chunks = [mine[:2], mine[2:]] if rank == 0 else [mine]
    module._eval = {
        "topk": [np.c_[c, c + 1] for c in chunks],
        "truth": [sp.csr_matrix(np.eye(9, 5)[c]) for c in chunks],
        "learners": chunks,
    }
    topk, truth, learners = module._gather_eval()
    np.savez(f"{out}/rank{rank}.npz", topk=topk[0], truth=truth[0].toarray(), learners=learners[0])


def test_evaluation_shares_are_gathered_in_learner_order_on_every_rank(tmp_path):
    run_distributed(_gather_worker, 2, str(tmp_path), start_method="fork")
    for rank in (0, 1):
        with np.load(tmp_path / f"rank{rank}.npz") as z:
            assert np.array_equal(z["learners"], np.arange(9))
            assert np.array_equal(z["topk"], np.c_[np.arange(9), np.arange(1, 10)])
            assert np.array_equal(z["truth"], np.eye(9, 5))


# ---- who writes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "rank"),
    [({}, 0), ({"LOCAL_RANK": "0"}, 0), ({"LOCAL_RANK": "1"}, 1), ({"NODE_RANK": "2"}, 2)],
)
def test_rank_before_the_process_group_comes_from_the_launcher_environment(monkeypatch, env, rank):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert global_rank() == rank and is_writer() == (rank == 0)
    assert process_group_size() == 1


def test_a_malformed_rank_variable_is_named(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "one")
    with pytest.raises(ValueError, match="LOCAL_RANK: expected a rank >= 0"):
        global_rank()


def test_ncf_rank_other_than_zero_writes_nothing(monkeypatch, tmp_path):
    from experiments.train_ncf import run

    monkeypatch.setenv("LOCAL_RANK", "1")  # as Lightning's launcher starts rank 1
    cfg = compose_cfg(
        "train_ncf", f"paths.output_dir={tmp_path}", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "ncf.refit=false", "outputs.plots=false",
        "+trainer.logger=false",
    )  # fmt: skip
    metrics = run(cfg)
    assert 0 < metrics["test"]["test_ndcg@10"] <= 1
    # only Lightning's checkpoint (its own rank-0 rule does not apply: no process group here)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


# ---- GLMix in the process group -------------------------------------------------------------------
@pytest.mark.parametrize("world_size", [1, 2])
def test_glmix_shards_over_a_process_group_only_when_there_is_one(monkeypatch, world_size):
    seen = {}

    def fake_fit_on_split(log, split, *, model, **kwargs):
        seen["distributed"] = model.distributed
        raise StopIteration  # the model is all this test needs

    monkeypatch.setattr(train_glmix, "fit_on_split", fake_fit_on_split)
    monkeypatch.setattr(train_glmix, "require_impressions", lambda split: None)  # no data here
    monkeypatch.setattr(train_glmix, "process_group_size", lambda: world_size)
    cfg = compose_cfg("train_glmix", "paths.output_dir=unused")
    with pytest.raises(StopIteration):
        train_glmix.fit(cfg, SimpleNamespace(log=None, split=None, report=None))
    assert seen["distributed"] is (world_size > 1)


# ---- two gloo processes against one, end to end ------------------------------------------------
def _train(out: Path, *overrides: str) -> dict:
    cmd = [
        PYTHON, "-m", "experiments.train_ncf", "data=synthetic_small", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false", "outputs.plots=false", "outputs.embeddings=false",
        "threads=1", "ncf.model.dropout=0", f"paths.output_dir={out}", f"hydra.run.dir={out}",
        *overrides,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK")}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=900, capture_output=True)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_two_tower_as_one(tmp_path):
    """Dropout is off: with it on, the ranks draw other masks than one process does (each
    for its own rows), and the metrics differ as much as between seeds (measured on this
    platform, 3 epochs: test ndcg@10 0.266 one process vs 0.234 two, hr@10 0.50 vs 0.45).
    Without dropout the two runs' weights differ by float-order noise (measured <= 3e-5,
    except the course tower's last bias, which the softmax cannot see: its gradient is
    rounding noise that Adam normalizes to +-lr steps), and every valid and test metric
    was identical (difference 0.0, 2 and 3 epochs). The tolerance, 0.011, lets one test
    learner's top-10 hit flip on another machine's arithmetic (1/101 learners = 0.0099)
    and no more."""
    one = _train(tmp_path / "one")
    two = _train(tmp_path / "two", "trainer=ddp_cpu")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert (tmp_path / "two" / "train_ddp_process_1.log").exists()  # rank 1 ran, in this dir
    assert two["best_epoch"] == one["best_epoch"]
    for split in ("valid", "test"):
        assert set(two[split]) == set(one[split])
        for name, value in one[split].items():
            assert two[split][name] == pytest.approx(value, abs=0.011), name
