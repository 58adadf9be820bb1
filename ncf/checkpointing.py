"""What a two-tower fit needs to resume after a crash and end where an uninterrupted one ends.

- `AtomicCheckpointIO`: Lightning's own writer goes through an fsspec transaction whose
  temporary file lives in the system temp folder; committing it is `shutil.move`, a copy when
  that folder is on another file system, so a SIGKILL mid-copy leaves a truncated
  `last.ckpt` (and overwriting `last.ckpt` destroys the previous one first). Here the bytes
  go to a temporary file beside the target and are renamed onto it (`watchlog.io.atomic_path`):
  a reader sees the previous checkpoint or the new one.
- `RNGState`: Lightning restores weights, optimizer, loop counters and callback states, not
  the random number generators; this callback saves and restores the global torch (CPU and
  CUDA), numpy and Python generators with every checkpoint, so dropout draws after a resume
  are the ones an uninterrupted run makes.
- `loadable_checkpoint`: whether a checkpoint file can be read back (a guard for checkpoints
  written by other code or a damaged disk).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from watchlog.io import atomic_path

__all__ = ["AtomicCheckpointIO", "RNGState", "loadable_checkpoint"]

logger = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` writing to a temporary file beside the target, then renaming."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint: storage_options is not supported")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class RNGState(pl.Callback):
    """Global generator states in every checkpoint (`state_dict`), restored on resume."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the global one seed_everything seeds
        version, state, gauss_next = random.getstate()
        out: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            # plain ints and tensors only: the checkpoint loads with weights_only=True
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, list(state), gauss_next],
        }
        if torch.cuda.is_available():
            out["cuda"] = torch.cuda.get_rng_state_all()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        legacy = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
        np.random.set_state(legacy)  # noqa: NPY002 - the global one seed_everything seeds
        version, py_state, gauss_next = state["python"]
        random.setstate((version, tuple(py_state), gauss_next))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def loadable_checkpoint(path: str | Path) -> bool:
    """True when `path` exists and `torch.load(..., weights_only=True)` reads it with a
    Lightning training state in it (epoch, weights, optimizer)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read means: do not resume from it
        logger.warning("checkpoint %s cannot be read (%s: %s); not resuming from it",
                       path, type(err).__name__, err)  # fmt: skip
        return False
    missing = [k for k in ("epoch", "state_dict", "optimizer_states") if k not in state]
    if missing:
        logger.warning("checkpoint %s has no %s; not resuming from it", path, missing)
        return False
    return True
