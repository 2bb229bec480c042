"""What a training prints: Lightning's bar on a terminal, one line per epoch in a log.

A bar redrawn with carriage returns is unreadable in the log of ``dvc repro`` or a CI
job; there each epoch is one plain line instead. Lightning's start-up chatter (device
lines, tips, the model summary) and library deprecation warnings say nothing to a user
of this pipeline and are kept out of both.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

# Lightning's own notices (devices, tips, "`Trainer.fit` stopped"); its warnings still show.
for _name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
              "lightning_fabric.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# A deprecation inside a library is its maintainers' to fix, not the user's to read.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(pytorch_lightning|lightning|torch)\b")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def is_terminal() -> bool:
    return sys.stdout.isatty()


class EpochLines(Callback):
    """Prints ``<what>: epoch i/n, <metrics>, <seconds>`` at the end of an epoch, at most
    every ``every`` seconds (and always for the last), so a 300-epoch run on a small table
    is a few lines, a 15-epoch run on MNIST one a minute."""

    def __init__(self, what: str, every: float = 10.0) -> None:
        self.what, self.every = what, every
        self.start = self.last = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = self.last = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.perf_counter()
        final = trainer.current_epoch + 1 >= trainer.max_epochs  # early stopping's last epoch: on_train_end
        if not trainer.is_global_zero or (now - self.last < self.every and not final):
            return
        self.last = now
        shown = ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items())
                          if k.endswith(("loss", "acc")))
        print(f"  {self.what}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
              f"{', ' + shown if shown else ''} ({now - self.start:.0f}s)", flush=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and trainer.current_epoch < trainer.max_epochs:
            print(f"  {self.what}: stopped early after epoch {trainer.current_epoch} of {trainer.max_epochs} "
                  f"({time.perf_counter() - self.start:.0f}s)", flush=True)


def trainer_args(trainer: Mapping[str, Any], what: str) -> tuple[dict[str, Any], list[Callback]]:
    """The Trainer's keyword arguments from the ``trainer`` config and the callbacks that go
    with them: its progress bar on a terminal, ``EpochLines`` elsewhere; no model summary."""
    args = {**trainer, "enable_model_summary": False}
    if args.get("enable_progress_bar", True) and is_terminal():
        return args, []
    return {**args, "enable_progress_bar": False}, [EpochLines(what)]
