"""Self-labelling: fine-tune the encoder as a classifier of its own most confident clusters.

A clusterer's assignments are right for most points and wrong near cluster borders;
the points it is most sure of are nearly all right. The encoder plus a linear head,
trained on those points' cluster ids with random rotations and shifts, learns what the
clusters' members look like rather than where their codes lie, and its predictions then
relabel every point (the self-labelling step of SCAN and ASPC-DA, on top of N2D).

Shapes: images are uint8 (N, C, H, W); labels int (N,); confidences float (N,) in [0, 1].
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from latentlab.choices import FINETUNE_CLASSIFIERS as CLASSIFIERS
from latentlab.choices import check
from latentlab.config import check_cnn_fits
from latentlab.errors import ConfigError
from latentlab.files import atomic
from latentlab.models import Autoencoder, is_images, random_affine, to_float


def agreement(labels: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Fraction of each point's neighbours (N, n) indices that share its label, (N,)."""
    return (labels[neighbors] == labels[:, None]).mean(1)


def reliability(labels: np.ndarray, neighbors: np.ndarray | None, tiebreak: np.ndarray) -> np.ndarray:
    """How far each pseudo-label can be trusted, (N,): the agreement of its latent-space
    neighbours (measured on MNIST: the half of each cluster it ranks first is 99.6% right,
    against 99.2% for the mixture's density alone and 96.8% for its posterior), ties
    broken by ``tiebreak`` (the clusterer's typicality, later the classifier's probability)."""
    t = np.asarray(tiebreak, dtype=np.float64)
    span = t.max() - t.min()
    t = (t - t.min()) / span if span > 0 else np.zeros_like(t)
    return (agreement(labels, neighbors) if neighbors is not None else 0.0) + 1e-3 * t


def confident_subset(labels: np.ndarray, score: np.ndarray, k: int, fraction: float) -> np.ndarray:
    """Indices of the ``fraction`` highest-scoring points of each cluster (sorted).

    Per cluster, not overall: a global cut would drop whole uncertain clusters, and the
    classifier would never learn them.
    """
    if len(labels) != len(score):
        raise ConfigError(f"{len(labels)} labels but {len(score)} scores")
    keep = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        n = max(1, math.ceil(fraction * len(members)))
        # stable sort: ties broken by index, so the subset is deterministic
        order = np.argsort(-score[members], kind="stable")
        keep.append(members[order[:n]])
    return np.sort(np.concatenate(keep))


class Classifier(nn.Module):
    """An autoencoder's encoder with a linear head over its code: (N, C, H, W) -> (N, k) logits."""

    def __init__(self, encoder: nn.Module, latent_dim: int, k: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(latent_dim, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class ConvNet(nn.Module):
    """A fresh small CNN, (N, C, H, W) -> (N, k) logits: a 3x3 conv + ReLU + 2x2 max-pool
    block per entry of ``channels`` (its width), then a 128-unit hidden layer with dropout.
    Images only. Measured on full MNIST (seed 0, widths (32, 64)): trained on the AE/pixel
    consensus it reaches 0.985 ACC where the encoder + head reaches 0.978; it learns shapes
    the autoencoder's code has blurred. The widths are ``finetune.channels``: (16, 32) took
    0.4-0.5 of (32, 64)'s time a step on this CPU (the first block's 28x28 maps cost most)."""

    def __init__(self, input_shape: tuple[int, ...], k: int, channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"finetune.classifier=conv needs images (C, H, W), got inputs of shape "
                              f"{tuple(input_shape)}; use finetune.classifier=encoder")
        c, h, w = input_shape
        check_cnn_fits(channels, h, w)
        scale = 2 ** len(channels)
        self.input_shape, self.k, self.channels = tuple(input_shape), k, tuple(channels)
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = width
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * (h // scale) * (w // scale), 128), nn.ReLU(),
                                 nn.Dropout(0.3), nn.Linear(128, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LitSelfLabel(pl.LightningModule):
    """Cross-entropy (optionally label-smoothed) on pseudo-labels of augmented images;
    Adam with a cosine decay per epoch, or a one-cycle schedule per step peaking at lr."""

    def __init__(self, net: nn.Module, lr: float, epochs: int, augment: Mapping[str, float],
                 label_smoothing: float = 0.0, lr_schedule: str = "cosine") -> None:
        super().__init__()
        self.net, self.lr, self.epochs, self.augment = net, lr, epochs, dict(augment)
        self.label_smoothing, self.lr_schedule = label_smoothing, lr_schedule

    def training_step(self, batch, batch_idx):
        x, y = batch  # y: class ids (B,), or class probabilities (B, k) for soft pseudo-labels
        x = to_float(x)
        if is_images(x) and (self.augment["degrees"] > 0 or self.augment["translate"] > 0):
            x = random_affine(x, self.augment["degrees"], self.augment["translate"])
        loss = nn.functional.cross_entropy(self.net(x), y, label_smoothing=self.label_smoothing)
        self.log("finetune/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        if self.lr_schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr,
                                                        total_steps=self.trainer.estimated_stepping_batches)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b's cluster ids (N,) renamed to a's, one-to-one (Hungarian, on their contingency
    table), (N,) int; -1 where b's cluster has no partner in a (b has more clusters)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    if len(a) != len(b):
        raise ConfigError(f"cannot compare {len(a)} assignments with {len(b)}: re-run `dvc repro`")
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    rows, cols = linear_sum_assignment(contingency_matrix(ia, ib), maximize=True)
    to_a = np.full(len(ub), -1)
    to_a[cols] = ua[rows]
    return to_a[ib]


def consensus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where two clusterings (N,) agree, (N,) bool, after matching b's cluster ids to a's."""
    return match(a, b) == np.asarray(a)


def vote(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Soft pseudo-labels (N, k) float32 from two clusterings (N,): half of each point's
    mass on a's cluster, half on b's (matched to a's ids). Where they agree the label is
    hard; where they disagree the classifier is told both, instead of never seeing the
    point. Dropping the disagreements (``consensus``) leaves it blind exactly where the
    clusterings are unsure: on full MNIST it then put 534 sevens with the twos (0.974 ACC
    against the vote's 0.977), and where UMAP had merged two digits (13.5% disputed) it
    fell to 0.878 against the vote's 0.931."""
    a = np.asarray(a, dtype=np.int64)
    b = match(a, b)
    b = np.where(b < 0, a, b)
    out = np.zeros((len(a), k), dtype=np.float32)
    np.add.at(out, (np.arange(len(a)), a), 0.5)
    np.add.at(out, (np.arange(len(a)), b), 0.5)
    return out


@torch.inference_mode()
def predict_proba(net: nn.Module, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """uint8 images (N, C, H, W) -> class probabilities (N, k) float32."""
    net.eval()
    out = [torch.softmax(net(to_float(torch.from_numpy(x[i:i + batch_size]))), 1).numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)


@dataclass
class SelfLabelResult:
    net: nn.Module | None         # Classifier or ConvNet; None when rounds == 0
    labels: np.ndarray            # (N,) final assignments of the images it was given
    confidence: np.ndarray        # (N,)
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per round: n_used, changed, loss


def self_label(ae: Autoencoder, x: np.ndarray, labels: np.ndarray, typicality: np.ndarray, *, k: int,
               rounds: int, epochs: int, fraction: float, lr: float, batch_size: int,
               augment: Mapping[str, float], seed: int, latent_dim: int, neighbors: np.ndarray | None = None,
               trainer: Mapping[str, Any] | None = None, classifier: str = "encoder",
               candidates: np.ndarray | None = None, label_smoothing: float = 0.0,
               lr_schedule: str = "cosine", min_steps: int = 0, soft: np.ndarray | None = None,
               channels: Sequence[int] = (32, 64)) -> SelfLabelResult:
    """Train a classifier on x's most reliable pseudo-labels and relabel x, ``rounds`` times.

    ``classifier``: "encoder" (a copy of ``ae``'s encoder + a linear head) or "conv" (a
    fresh ``ConvNet`` with block widths ``channels``). Each round trains on the ``fraction`` most reliable members of
    every cluster (the previous round's predictions after the first) and relabels all
    of x. ``neighbors`` (N, n): indices of each point's nearest neighbours in latent
    space, for ``reliability``. ``candidates`` (N,) bool: the first round draws only from
    these (e.g. where two clusterings agree). ``soft`` (N, k): the first round's targets as
    class probabilities (e.g. ``vote``) instead of ``labels``' ids. A round lasts ``epochs`` or ``min_steps``
    optimizer steps, whichever is longer: on a small dataset a few epochs are a handful
    of steps, too few for a fresh network. The autoencoder itself is left as it is.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(x):
        raise ConfigError(f"{len(x)} images but {len(labels)} cluster assignments: re-run the cluster stage")
    result = SelfLabelResult(net=None, labels=labels, confidence=np.ones(len(x), dtype=np.float32))
    if rounds == 0:
        return result
    check("finetune.classifier", classifier, CLASSIFIERS)
    if candidates is not None and len(candidates) != len(x):
        raise ConfigError(f"{len(x)} images but {len(candidates)} candidate flags")
    if soft is not None and soft.shape != (len(x), k):
        raise ConfigError(f"soft labels of shape {soft.shape}, expected ({len(x)}, {k})")
    pl.seed_everything(seed, workers=True, verbose=False)
    if classifier == "auto":  # a CNN learns images best; feature vectors have only the encoder
        classifier = "conv" if x.ndim == 4 else "encoder"
    net = (Classifier(copy.deepcopy(ae.encoder), latent_dim, k) if classifier == "encoder"
           else ConvNet(tuple(x.shape[1:]), k, channels))
    data = torch.from_numpy(np.ascontiguousarray(x))
    trainer_args = {key: v for key, v in (trainer or {}).items()
                    if key in ("accelerator", "deterministic", "precision", "enable_progress_bar")}
    tiebreak = np.asarray(typicality)
    for r in range(rounds):
        score = reliability(result.labels, neighbors, tiebreak)
        if r == 0 and candidates is not None:
            score = np.where(candidates, score, -np.inf)  # ranked last, then cut below
        idx = confident_subset(result.labels, score, k, fraction)
        if r == 0 and candidates is not None:
            idx = idx[candidates[idx]]
        targets = soft[idx] if r == 0 and soft is not None else result.labels[idx]
        dl = DataLoader(TensorDataset(data[idx], torch.from_numpy(targets)),
                        batch_size=batch_size, shuffle=True)
        n_epochs = max(epochs, math.ceil(min_steps / len(dl)))
        lit = LitSelfLabel(net, lr=lr, epochs=n_epochs, augment=augment, label_smoothing=label_smoothing,
                           lr_schedule=lr_schedule)
        t = pl.Trainer(max_epochs=n_epochs, logger=False, enable_checkpointing=False, enable_model_summary=False,
                       devices=1, **trainer_args)
        t.fit(lit, dl)
        proba = predict_proba(net, x)
        new = proba.argmax(1).astype(np.int64)
        result.rounds.append({"round": r, "n_used": int(len(idx)), "epochs": n_epochs,
                              "changed": int((new != result.labels).sum()),
                              "loss": float(t.callback_metrics["finetune/loss"])})
        result.labels, result.confidence = new, proba.max(1)
        tiebreak = result.confidence
    result.net = net.eval()
    return result


def save(result: SelfLabelResult, ae_model: str | Path, path: str | Path) -> None:
    """Write the classifier (its kind and shape; for the encoder kind the autoencoder's
    hyperparameters, so that it rebuilds without the config; its weights; the per-round
    summary) atomically; with rounds=0, a checkpoint that says there is no classifier."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"rounds": result.rounds, "state_dict": None}
    if isinstance(result.net, ConvNet):
        payload.update(classifier="conv", input_shape=list(result.net.input_shape), k=result.net.k,
                       channels=list(result.net.channels), state_dict=result.net.state_dict())
    elif result.net is not None:
        hp = torch.load(ae_model, map_location="cpu", weights_only=True)["hyper_parameters"]
        payload.update(classifier="encoder", autoencoder_hparams=hp, k=result.net.head.out_features,
                           latent_dim=result.net.head.in_features, state_dict=result.net.state_dict())
    with atomic(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path) -> nn.Module:
    """The saved classifier in eval mode (weights_only: no code runs on load)."""
    from latentlab.models import build

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt["state_dict"] is None:
        raise ConfigError(f"{path} holds no classifier: it was written with finetune.rounds=0")
    if ckpt.get("classifier") == "conv":
        # checkpoints written before finetune.channels existed hold the (32, 64) network
        net: nn.Module = ConvNet(tuple(ckpt["input_shape"]), ckpt["k"], ckpt.get("channels", (32, 64)))
    else:
        hp = ckpt["autoencoder_hparams"]
        ae = build(hp["model"], tuple(hp["input_shape"]))
        net = Classifier(ae.encoder, ckpt["latent_dim"], ckpt["k"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()
