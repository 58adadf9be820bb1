"""Which process of a data-parallel run this is: only rank 0 writes files.

Under `trainer=ddp*` Lightning's launcher starts the other ranks by running the same command
again (with LOCAL_RANK set), so every rank runs the whole experiment: the data stage, every
collective fit (the two-tower's `Trainer.fit`, GLMix over the same process group), and then
only rank 0 writes models, metrics, plots and manifests. Before the first `Trainer.fit` the
process group does not exist yet, so the rank is read from the launcher's environment.
"""

from __future__ import annotations

import os

import torch.distributed as dist

__all__ = ["global_rank", "is_data_parallel", "is_writer", "process_group_size"]

# Set by Lightning's launcher (LOCAL_RANK, NODE_RANK) or by torchrun / SLURM (RANK).
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")


def _group_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def global_rank() -> int:
    """This process's rank: the default process group's, or (before it exists) 0 unless a
    launcher's environment variable says otherwise."""
    if _group_initialized():
        return dist.get_rank()
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "0").strip() or "0"
        if not value.isdigit():
            raise ValueError(f"environment variable {name}: expected a rank >= 0, got {value!r}")
        if int(value):
            return int(value)
    return 0


def is_writer() -> bool:
    """True in the one process that writes the run's files (rank 0, or a plain run)."""
    return global_rank() == 0


def process_group_size() -> int:
    """World size of the initialised default process group; 1 when there is none."""
    return dist.get_world_size() if _group_initialized() else 1


def is_data_parallel(trainer_cfg) -> bool:
    """True when the trainer config asks for more than one DDP process (`trainer=ddp*`):
    known from the config before the process group exists."""
    strategy = str(trainer_cfg.get("strategy", "") or "")
    devices = trainer_cfg.get("devices", 1)
    many = devices in ("auto", -1) or (isinstance(devices, int) and devices > 1)
    return strategy.startswith("ddp") and many
