"""One log line per training epoch, for runs whose output is not a terminal.

Lightning's progress bar redraws with carriage returns many times a second; in a log file or
CI that is thousands of lines. Where `watchlog.progress.progress_mode()` is not `bar`, the
trainer gets this callback instead of the bar (`ncf.training.fit_and_test`):

    epoch 3/10: 6.9 s, loss 5.8123, val_ndcg@10 0.1712 (best 0.1712)

A resumed fit's best starts at the restored checkpoint callback's best score, so "(best ...)"
goes on from the epochs before the restart.
"""

from __future__ import annotations

import logging
import math
import time

import pytorch_lightning as pl

from watchlog.progress import progress_mode

__all__ = ["EpochLog", "use_progress_bar"]

_log = logging.getLogger(__name__)


def use_progress_bar(asked: bool) -> bool:
    """Lightning's bar only when asked for and the progress mode is a bar (a terminal)."""
    return bool(asked) and progress_mode() == "bar"


class EpochLog(pl.Callback):
    """Logs each epoch's time, training loss and monitored validation metric."""

    def __init__(self, monitor: str | None = None) -> None:
        self.monitor = monitor
        self._start = 0.0
        self._best = -math.inf

    def on_train_start(self, trainer, module) -> None:
        # A resumed fit: the best so far is the restored checkpoint callback's, not -inf.
        restored = _restored_best(trainer, self.monitor)
        if restored is not None:
            self._best = max(self._best, restored)

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        # Runs after the epoch's validation (Lightning validates inside the training epoch).
        m = trainer.callback_metrics
        parts = [f"{time.perf_counter() - self._start:,.1f} s"]
        loss = next((m[k] for k in ("train_loss_epoch", "train_loss") if k in m), None)
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if self.monitor and self.monitor in m:
            value = float(m[self.monitor])
            self._best = max(self._best, value)
            parts.append(f"{self.monitor} {value:.4f} (best {self._best:.4f})")
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        _log.info("epoch %d/%s: %s", trainer.current_epoch + 1, total, ", ".join(parts))


def _restored_best(trainer, monitor: str | None) -> float | None:
    """The best `monitor` value a checkpoint callback on it holds (restored from the
    checkpoint a fit resumes from; None on a fresh fit or without such a callback)."""
    scores = [
        float(cb.best_model_score)
        for cb in getattr(trainer, "checkpoint_callbacks", [])
        if monitor and getattr(cb, "monitor", None) == monitor
        and getattr(cb, "mode", "max") == "max" and cb.best_model_score is not None
    ]  # fmt: skip
    finite = [s for s in scores if math.isfinite(s)]
    return max(finite) if finite else None
