"""Paths in a run's config are absolute, so its saved `resolved_config.yaml` means the same
folders from any directory: `python -m experiments.export run_dir=...` run elsewhere publishes
where the run did.

- `${abspath:...}` (registered when `experiments` is imported): conf/paths/default.yaml's
  `root_dir` (the current directory, or PROJECT_ROOT) and `data_root` resolve absolute, and
  so does every path built on them (the export sink's `outputs/lists`);
- `pin_relative_paths`: a path given relative on the command line (`export.sink.path=
  outputs/lists.db`) made absolute against the directory the command runs in, before the
  config is saved.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

__all__ = ["PINNED_PATHS", "pin_relative_paths", "register_resolvers"]

# Config keys holding a file path that a later command (in another directory) reads again.
PINNED_PATHS = ("export.sink.path",)


def register_resolvers() -> None:
    """`${abspath:<path>}`: the path made absolute against the current directory."""
    OmegaConf.register_new_resolver("abspath", _absolute, replace=True)


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def pin_relative_paths(cfg: DictConfig) -> None:
    """In place: each key of `PINNED_PATHS` whose value is a relative path set to it made
    absolute against the current directory (a key absent, null or absolute stays as it is)."""
    for key in PINNED_PATHS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value and not os.path.isabs(value):
            OmegaConf.update(cfg, key, _absolute(value), merge=False)
