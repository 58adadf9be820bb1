"""Weight averaging in the two-tower's fit (`ncf.ema_decay`, Lightning's EMAWeightAveraging):
the averaged weights are what validation scores, what the best checkpoint holds, what the
refit ends with and what is tested; settings that would average twice are refused."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging

from ncf.datamodule import NCFDataModule
from ncf.inputs import InputBuilder
from ncf.model import TwoTower
from ncf.module import NCFModule
from ncf.training import default_callbacks, fit_and_test
from watchlog.cleaning import CleaningConfig, clean
from watchlog.eventlog import EventLog
from watchlog.splits import temporal_split
from watchlog.synthetic import simulate_tables

pytestmark = pytest.mark.usefixtures("one_thread")
TRAINER = dict(accelerator="cpu", max_epochs=3, enable_progress_bar=False)


@pytest.fixture(scope="module")
def log():
    events, learners, courses, _ = simulate_tables(150, 40, n_days=90, seed=5)
    return clean(EventLog.from_tables(events, learners, courses), CleaningConfig())


def _setup(log) -> tuple[NCFDataModule, NCFModule]:
    split = temporal_split(log, valid_days=10, test_days=10)
    dm = NCFDataModule(log, split, InputBuilder(lookback_days=365, cowatch_top_k=10),
                       n_cutoffs=2, spacing_days=7, batch_size=16, seed=0)  # fmt: skip
    dm.setup()
    pl.seed_everything(0, verbose=False)
    model = TwoTower(log.n_learners, log.n_courses, bag_dim=16, mlp=[12, 8], course_bias=True)
    return dm, NCFModule(model, course_popularity=dm.course_popularity())


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_best_checkpoint_holds_the_averaged_weights_validation_scored(log, tmp_path):
    dm, module = _setup(log)
    res = fit_and_test(dm, module, tmp_path, ema_decay=0.9, trainer_kwargs=TRAINER)
    state = torch.load(res.checkpoint, map_location="cpu", weights_only=True)
    averaged, raw = state["state_dict"], state["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)  # it did average
    now = _weights(module)
    assert all(torch.equal(now[k], averaged[k]) for k in averaged)  # the model tested
    # validation recomputed on the reloaded weights = the score the epoch was chosen by; a
    # weights-only checkpoint would have held the raw weights, scored by no validation
    assert res.valid["val_ndcg@10"] == pytest.approx(res.best_score, abs=1e-6)


def test_the_reported_validation_is_the_best_epochs_not_the_last_average(log, tmp_path):
    """A checkpoint kept on the *lowest* validation score: the chosen epoch is then not the
    last one, so the average at the end of training differs from the chosen epoch's. The
    validation reported is the chosen checkpoint's; the average left on the trainer after
    the fit is not swapped in for it."""
    dm, module = _setup(log)
    timer, worst, _ = default_callbacks()
    worst.mode = "min"  # keeps the worst epoch: the first here, while the average moves on
    res = fit_and_test(dm, module, tmp_path, ema_decay=0.9, callbacks=[timer, worst],
                       trainer_kwargs=TRAINER)  # fmt: skip
    assert res.best_epoch < res.epochs_run - 1
    assert res.valid["val_ndcg@10"] == pytest.approx(res.best_score, abs=1e-6)


def test_without_averaging_the_checkpoint_stays_weights_only(log, tmp_path):
    dm, module = _setup(log)
    res = fit_and_test(dm, module, tmp_path, trainer_kwargs=TRAINER)
    state = torch.load(res.checkpoint, map_location="cpu", weights_only=True)
    assert "current_model_state" not in state and "optimizer_states" not in state


class CountingEMA(EMAWeightAveraging):
    """Records every fit it averaged (its max_epochs) and the weights it ended with."""

    ended: list = []

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)  # copies the average into the module
        CountingEMA.ended.append((trainer.max_epochs, _weights(pl_module)))


def test_the_refit_averages_with_a_fresh_copy_of_the_callback(log, tmp_path):
    """A WeightAveraging given among the callbacks is used as given, and the refit trains
    with a fresh copy of it: the model tested is the refit's average."""
    CountingEMA.ended.clear()
    dm, module = _setup(log)
    callbacks = [*default_callbacks(patience=5), CountingEMA(decay=0.9)]
    res = fit_and_test(dm, module, tmp_path, refit=True, callbacks=callbacks,
                       trainer_kwargs=TRAINER)  # fmt: skip
    assert [e for e, _ in CountingEMA.ended] == [3, res.best_epoch + 1]  # the fit, the refit
    refit_average, now = CountingEMA.ended[1][1], _weights(module)
    assert all(torch.equal(now[k], refit_average[k]) for k in refit_average)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 2.0])
def test_a_decay_outside_zero_one_is_refused(tmp_path, decay):
    with pytest.raises(ValueError, match=r"ema_decay .*must lie in \(0, 1\)"):
        fit_and_test(None, None, tmp_path, ema_decay=decay)


def test_two_averages_are_refused(tmp_path):
    with pytest.raises(ValueError, match="both average the weights"):
        fit_and_test(None, None, tmp_path, ema_decay=0.9,
                     callbacks=[*default_callbacks(), EMAWeightAveraging()])  # fmt: skip
    with pytest.raises(ValueError, match="2 weight-averaging callbacks"):
        fit_and_test(
            None,
            None,
            tmp_path,
            callbacks=[*default_callbacks(), EMAWeightAveraging(), EMAWeightAveraging()],
        )
