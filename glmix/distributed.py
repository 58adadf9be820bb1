"""Scale-out over torch.distributed: random-effect entities sharded across ranks, the fixed
effect's gradient all-reduced.

The layout is data-replicated, work-sharded: every rank holds the same training rows (e.g.
memory-mapped from the same files) and runs the same coordinate descent, but

- a random-effect coordinate solves only the entities it owns (entity index % world_size ==
  rank) and the coefficients are then summed across ranks (every entity is owned by exactly
  one rank, so the sum is exact: x + 0 + ... = x);
- the fixed effect computes its loss and gradient on its own contiguous block of rows and
  all-reduces them, so every rank takes the same optimizer steps;
- scores, offsets, objective and validation AUC are then identical on every rank.

The result equals the single-process model up to the order of floating-point sums (tested
with 2 CPU processes over gloo). `GLMix(distributed=True)` picks up the default process group;
`Comm` is what the estimators take (`LOCAL` = one process, no communication).

    def worker(rank, world_size, path):      # top-level, so spawn can import it
        model = GLMix(..., distributed=True).fit(designs, keys, y)
        if rank == 0:
            model.save(path)

    run_distributed(worker, 2, path)          # gloo on CPU; 2 processes
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Comm", "LOCAL", "run_distributed"]


class Comm:
    """This process's rank among `world_size`, and the sums that cross ranks."""

    def __init__(self, rank: int = 0, world_size: int = 1, group: Any = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"Comm: rank {rank} is outside 0..{world_size - 1}")
        self.rank, self.world_size, self.group = rank, world_size, group

    @classmethod
    def from_torch(cls, group: Any = None) -> Comm:
        """The default (or given) torch.distributed process group; it must be initialized."""
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed=True needs torch.distributed.init_process_group(...) to have been "
                "called in this process (e.g. by torchrun or run_distributed)"
            )
        return cls(dist.get_rank(group), dist.get_world_size(group), group)

    def __repr__(self) -> str:
        return f"Comm(rank={self.rank}, world_size={self.world_size})"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def owns(self, n_entities: int) -> np.ndarray:
        """(n_entities,) bool: the entities this rank solves (index % world_size == rank)."""
        return np.arange(n_entities) % self.world_size == self.rank

    def row_block(self, n_rows: int) -> slice:
        """This rank's contiguous block of rows (for the fixed effect's gradient)."""
        bounds = np.linspace(0, n_rows, self.world_size + 1).astype(np.int64)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def _device(self, t: torch.Tensor) -> torch.device:
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def allreduce_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` over ranks (in place when the backend can use it where it is)."""
        if not self.distributed:
            return t
        dev = self._device(t)
        if t.device == dev:
            dist.all_reduce(t, group=self.group)
            return t
        tmp = t.to(dev)
        dist.all_reduce(tmp, group=self.group)
        t.copy_(tmp.to(t.device))
        return t

    def allreduce_array(self, a: np.ndarray) -> np.ndarray:
        """Sum a numpy array over ranks; returns a new array."""
        if not self.distributed:
            return a
        t = torch.from_numpy(np.ascontiguousarray(a)).clone()
        return self.allreduce_(t).numpy()


LOCAL = Comm()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world_size: int, port: int, backend: str, args: tuple):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)  # ranks share the machine's cores
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(
    fn: Callable, world_size: int, *args: Any, backend: str = "gloo", start_method: str = "spawn"
) -> None:
    """Run fn(rank, world_size, *args) in `world_size` processes joined in a process group on
    this machine (torch.multiprocessing). "spawn" starts fresh interpreters (`fn` must be
    importable, i.e. top-level); "fork" (Linux, CPU) copies this one and skips re-importing
    torch & co., seconds faster on a small job."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _entry,
        args=(fn, world_size, _free_port(), backend, args),
        nprocs=world_size,
        start_method=start_method,
    )
