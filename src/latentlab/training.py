"""Fitting an autoencoder with Lightning, saving it, loading it, and encoding with it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from latentlab import metric_names as M
from latentlab.choices import OPTIMIZERS, check
from latentlab.config import budget_epochs
from latentlab.files import atomic
from latentlab.progress import trainer_args
from latentlab.models import (Autoencoder, ConvAutoencoder, build, is_images, mean_sample_mse, random_affine, stalled,
                              to_float)

# Data is an in-memory tensor: worker processes would only add start-up cost.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
# A resumed run's checkpoint folder holds the killed run's checkpoints, on purpose.
warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")


class LitAutoencoder(pl.LightningModule):
    """Trains any ``Autoencoder`` on reconstruction MSE.

    ``model`` and ``optimizer`` are plain dicts with a Hydra ``_target_``, saved as
    hyperparameters so that a checkpoint rebuilds itself without the config files.
    """

    def __init__(self, model: dict[str, Any], optimizer: dict[str, Any],
                 input_shape: tuple[int, int, int], lr_schedule: str = "constant",
                 max_epochs: int = 1, augment: dict[str, float] | None = None) -> None:
        super().__init__()
        from hydra.utils import instantiate

        check("optimizer._target_", optimizer.get("_target_"), OPTIMIZERS)  # as build() checks the model's
        self.save_hyperparameters()
        self.net: Autoencoder = build(model, input_shape)
        self._optimizer = instantiate(optimizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor], stage: str) -> torch.Tensor:
        x = to_float(batch[0])
        target = x
        aug = self.hparams.augment
        if stage == "train" and aug and is_images(x) and (aug["degrees"] > 0 or aug["translate"] > 0):
            # The code must not hinge on the exact position of a stroke (ASPC-DA's
            # pretraining). target=original goes further: the model sees the shifted copy
            # and must give back the digit as it was (centred), so the code cannot keep the shift.
            x = random_affine(x, aug["degrees"], aug["translate"])
            if reconstruct_target(self.net, aug.get("target", "augmented")) == "augmented":
                target = x
        loss = nn.functional.mse_loss(self.net(x), target)
        self.log(M.recon_loss(stage), loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(x), sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def configure_optimizers(self):
        opt = self._optimizer(self.parameters())
        if self.hparams.lr_schedule == "cosine":
            # Decays to zero at max_epochs: most of a long run's benefit in a short budget.
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.max_epochs)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt


def reconstruct_target(net: nn.Module, target: str) -> str:
    """What an autoencoder reconstructs from an augmented image: ``target``, or under
    ``auto`` the original for a conv autoencoder and the augmented copy otherwise.

    A conv decoder's transposed convolutions can redraw a digit anywhere, so asked for the
    shifted copy its code must carry the shift; asked for the original it cannot keep it.
    Measured (full MNIST, dev seeds, AE + UMAP + GMM ACC): conv 0.970 -> 0.978 (seed 100),
    0.977 (seed 101), above the pixels' 0.974; the MLP's code 0.975 -> 0.976 (seed 100),
    no change worth its default's re-measurement."""
    if target != "auto":
        return target
    return "original" if isinstance(net, ConvAutoencoder) else "augmented"


class History(Callback):
    """Collects the per-epoch train and validation loss for the plot file and MLflow.

    Rank zero also writes them to ``path``: under ``ddp_spawn`` training runs in
    child processes, and only the weights come back to the caller.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        if M.TRAIN_LOSS in m and M.VAL_LOSS in m:
            self.rows.append({"epoch": trainer.current_epoch, M.TRAIN_LOSS: float(m[M.TRAIN_LOSS]),
                              M.VAL_LOSS: float(m[M.VAL_LOSS])})
        if trainer.is_global_zero:
            self.path.write_text(json.dumps({"world_size": trainer.world_size, "rows": self.rows}))

    # Saved in every checkpoint, so that a resumed run keeps the epochs before the crash.
    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])

    def read(self) -> tuple[list[dict[str, float]], int]:
        """(rows, world size) as rank zero saw them."""
        if not self.path.exists():
            return [], 1
        saved = json.loads(self.path.read_text())
        return saved["rows"], saved["world_size"]


class _Rows(Dataset):
    """Indexed by a whole batch of row numbers: one gather per batch, where a
    TensorDataset makes 256 single-row lookups and a collate (3x faster batching,
    bench/fixes.py; about 1% of an MLP epoch on MNIST, more for smaller models)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor]:
        return (self.x[rows],)


def batches(x: torch.Tensor, batch_size: int, shuffle: bool) -> DataLoader:
    """Batches (x[rows],) of an in-memory tensor (N, ...), the same rows in the same
    order as ``DataLoader(TensorDataset(x), batch_size, shuffle)`` draws them (the order
    comes from the global torch RNG either way)."""
    order = RandomSampler(x) if shuffle else SequentialSampler(x)
    return DataLoader(_Rows(x), sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


@dataclass
class FitResult:
    net: Autoencoder
    hparams: dict[str, Any]
    history: list[dict[str, float]]
    best_val_loss: float
    best_epoch: int
    world_size: int = 1  # training processes (2+ under DDP)
    mean_val_loss: float = float("nan")  # the val loss of outputting the mean training sample

    @property
    def stalled(self) -> bool:
        """The best val loss is no real improvement on the mean training sample's."""
        return stalled(self.best_val_loss, self.mean_val_loss)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index split of n samples."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit(x: np.ndarray, *, model: dict, optimizer: dict, trainer: dict, batch_size: int,
        max_epochs: int, val_fraction: float, patience: int, min_delta: float, seed: int,
        lr_schedule: str = "constant", augment: dict[str, float] | None = None,
        workdir: str | Path | None = None, callbacks: list[Callback] | None = None,
        resume_dir: str | Path | None = None, min_steps: int = 0,
        budget_max_epochs: int | None = None) -> FitResult:
    """Train an autoencoder on uint8 images x of shape (N, C, H, W).

    Keeps the weights of the epoch with the lowest validation reconstruction loss.
    Trains ``max_epochs``, or as many epochs as ``min_steps`` optimizer steps take if more
    (a small dataset's epoch is a handful of steps: a budget of steps, not of passes, keeps
    its autoencoder from being under-trained), but never more than ``budget_max_epochs``
    for the budget's sake (a 150-row table's epoch is one step: 3,700 epochs would be
    minutes of passes over the same rows). Early stopping waits for those epochs: it
    would otherwise cut the cosine schedule off at a high learning rate.
    ``augment`` ({degrees, translate}): random per-image rotations and shifts of the
    training batches (validation images are left as they are).
    ``trainer`` goes to Lightning's Trainer as is: ``strategy: ddp_spawn, devices: 2``
    trains in 2 processes (each sees half of every epoch; losses are averaged).
    ``resume_dir``: checkpoints (the best and the last epoch's) are kept there instead of
    in a temporary folder, with a fingerprint of the data and every argument; a run that
    finds a ``last.ckpt`` of the same fingerprint (a killed run) resumes from it, any
    other content is discarded. The folder is removed once training has finished.
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    tr, va = split_indices(len(x), val_fraction, seed)
    data = torch.from_numpy(np.ascontiguousarray(x))
    train_dl = batches(data[tr], batch_size, shuffle=True)
    min_epochs = budget_epochs(min_steps, len(train_dl), budget_max_epochs)
    max_epochs = max(max_epochs, min_epochs)
    val_dl = batches(data[va], max(batch_size, 1024), shuffle=False)
    lit = LitAutoencoder(model=model, optimizer=optimizer, input_shape=tuple(x.shape[1:]),
                         lr_schedule=lr_schedule, max_epochs=max_epochs, augment=augment)
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    args = {"model": model, "optimizer": optimizer, "trainer": trainer, "batch_size": batch_size,
            "max_epochs": max_epochs, "val_fraction": val_fraction, "patience": patience, "min_delta": min_delta,
            "seed": seed, "lr_schedule": lr_schedule, "augment": augment, "min_epochs": min_epochs}
    with _checkpoint_dir(resume_dir, workdir, x, args) as (ckdir, resume_from):
        history = History(ckdir / "history.json")
        best = ModelCheckpoint(dirpath=ckdir, monitor=M.VAL_LOSS, mode="min", save_top_k=1,
                               save_last=resume_dir is not None)
        stop = EarlyStopping(monitor=M.VAL_LOSS, mode="min", patience=patience, min_delta=min_delta)
        targs, lines = trainer_args(trainer, "autoencoder")
        t = pl.Trainer(max_epochs=max_epochs, min_epochs=min_epochs, logger=False,
                       callbacks=[history, best, stop, *lines, *(callbacks or [])], num_sanity_val_steps=0, **targs)
        t.fit(lit, train_dl, val_dl, ckpt_path=resume_from, weights_only=True)
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        lit.load_state_dict(state)
        rows, world_size = history.read()
    best_row = min(rows, key=lambda r: r[M.VAL_LOSS])
    lit.net.eval()
    return FitResult(net=lit.net, hparams=dict(lit.hparams), history=rows, best_val_loss=best_row[M.VAL_LOSS],
                     best_epoch=int(best_row["epoch"]), world_size=world_size,
                     mean_val_loss=mean_sample_mse(x[tr], x[va]))


@contextlib.contextmanager
def _checkpoint_dir(resume_dir: str | Path | None, workdir: str | Path | None, x: np.ndarray,
                    args: dict[str, Any]) -> Iterator[tuple[Path, str | None]]:
    """(folder for checkpoints, last.ckpt to resume from or None); see ``fit``."""
    if resume_dir is None:
        with tempfile.TemporaryDirectory(dir=workdir, prefix=".ckpt-") as tmp:
            yield Path(tmp), None
        return
    folder = Path(resume_dir)
    digest = hashlib.blake2b(np.ascontiguousarray(x).data, digest_size=16)
    digest.update(json.dumps([list(x.shape), str(x.dtype), args], sort_keys=True, default=str).encode())
    stamp, last = folder / "fingerprint", folder / "last.ckpt"
    resume = last.exists() and stamp.exists() and stamp.read_text() == digest.hexdigest()
    if resume:
        epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
        print(f"resuming from {last}: {epoch + 1} epochs done before the previous run stopped", flush=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        stamp.write_text(digest.hexdigest())
    yield folder, str(last) if resume else None
    shutil.rmtree(folder, ignore_errors=True)


def save(result: FitResult, path: str | Path) -> None:
    """Write a slim checkpoint (hyperparameters + weights) atomically."""
    payload = {"hyper_parameters": result.hparams, "state_dict": result.net.state_dict(),
               "best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch}
    with atomic(path) as tmp:
        torch.save(payload, tmp)
