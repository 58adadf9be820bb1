"""The small, fast pipeline run the stage tests share: the small platform (200 days), small
windows, 2 epochs, small grids (about 25 s). `compose_cfg("pipeline", *FAST, ...)`."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "data=synthetic_small",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "outputs.plots=false",
    "outputs.embeddings=false",
    "threads=1",
    "split.fn.valid_days=20",
    "split.fn.test_days=20",
    "split.fn.blend_days=20",
    "blend.candidates.n_retrieve=40",
    "blend.variants.logistic.l2=[1.0]",
    "blend.variants.personalized.learner_l2=[30.0]",
    "blend.replay.methods=[gradient,nelder_mead]",
    "blend.n_boot=500",
]


def compose_cfg(name: str, *overrides: str):
    """The config `name` (conf/<name>.yaml) with the overrides, as Hydra composes it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def rerun(run, name: str, *overrides: str):
    """A run_dir command's `run(cfg, overrides)` as its `main` calls it: the composed config
    and the command line's overrides (which alone change the run's settings)."""
    return run(compose_cfg(name, *overrides), list(overrides))
