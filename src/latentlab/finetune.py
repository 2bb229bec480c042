"""Self-labelling: train a classifier on a clustering's most reliable assignments, then relabel.

A clusterer's assignments are right for most points and wrong near cluster borders;
the points it is most sure of are nearly all right. A network trained on those points'
cluster ids with random rotations and shifts learns what the clusters' members look
like rather than where their codes lie, and its predictions then relabel every point
(the self-labelling step of SCAN and ASPC-DA, on top of N2D).

Two uses: ``autoencoder_selflabel`` trains the autoencoder's own encoder (+ a head) on
the autoencoder method's clusters (``encoder_classifier``); its raw twin
``raw_selflabel`` trains a fresh network on the pixels' clusters (``fresh_classifier``).

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
from pytorch_lightning.callbacks import WeightAveraging
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader, TensorDataset

from latentlab.config import budget_epochs, check_cnn_fits
from latentlab.errors import ConfigError
from latentlab.files import atomic
from latentlab.models import Autoencoder, affine, draw_affine, is_images, random_affine, to_float
from latentlab.progress import trainer_args


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
    """An autoencoder's encoder with a linear head over its code: (N, C, H, W) -> (N, k) logits.
    ``decoder``: the autoencoder's decoder, kept while training (the reconstruction term of
    ``LitSelfLabel``), dropped before the classifier is saved."""

    def __init__(self, encoder: nn.Module, latent_dim: int, k: int, decoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(latent_dim, k)
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class ConvNet(nn.Module):
    """A fresh small CNN, (N, C, H, W) -> (N, k) logits: a 3x3 conv + ReLU + 2x2 max-pool
    block per entry of ``channels`` (its width), then a 128-unit hidden layer with dropout.
    Images only: the raw twin's network, the strongest pixel learner of the baselines. The
    widths are ``finetune.channels``: (16, 32) took 0.4-0.5 of (32, 64)'s time a step on
    this CPU (the first block's 28x28 maps cost most)."""

    def __init__(self, input_shape: tuple[int, ...], k: int, channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"the self-labelling CNN needs images (C, H, W), got inputs of shape "
                              f"{tuple(input_shape)}")
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


class MLPNet(nn.Module):
    """A fresh dense classifier for feature vectors, (N, D) -> (N, k) logits: two hidden
    layers of ``width`` with ReLU and dropout."""

    def __init__(self, n_in: int, k: int, width: int = 256) -> None:
        super().__init__()
        self.n_in, self.k, self.width = n_in, k, width
        self.net = nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, width),
                                 nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LitSelfLabel(pl.LightningModule):
    """Cross-entropy (optionally label-smoothed) on pseudo-labels of augmented images;
    Adam with a cosine decay per epoch, or a one-cycle schedule per step peaking at lr."""

    def __init__(self, net: nn.Module, lr: float, epochs: int, augment: Mapping[str, float],
                 label_smoothing: float = 0.0, lr_schedule: str = "cosine", recon_weight: float = 0.0,
                 mixup: float = 0.0) -> None:
        super().__init__()
        self.net, self.lr, self.epochs, self.augment = net, lr, epochs, dict(augment)
        self.label_smoothing, self.lr_schedule, self.recon_weight = label_smoothing, lr_schedule, recon_weight
        self.mixup = mixup

    def training_step(self, batch, batch_idx):
        x, y = batch  # y: class ids (B,), or class probabilities (B, k) for soft pseudo-labels
        x = to_float(x)
        if is_images(x) and (self.augment["degrees"] > 0 or self.augment["translate"] > 0):
            x = random_affine(x, self.augment["degrees"], self.augment["translate"])
        lam, perm = 1.0, None
        if self.mixup > 0:
            # mixup (Zhang et al. 2018): a convex mix of two inputs learns the same mix of their
            # labels, so a network cannot memorise one wrong pseudo-label as easily
            lam = float(np.random.beta(self.mixup, self.mixup))
            perm = torch.randperm(len(x))
            x = lam * x + (1 - lam) * x[perm]

        def ce(logits: torch.Tensor) -> torch.Tensor:
            loss = nn.functional.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            if perm is None:
                return loss
            return lam * loss + (1 - lam) * nn.functional.cross_entropy(logits, y[perm],
                                                                        label_smoothing=self.label_smoothing)

        decoder = getattr(self.net, "decoder", None)
        if self.recon_weight > 0 and decoder is not None:
            # IDEC's point: the code keeps describing the image while it learns the clusters
            z = self.net.encoder(x)
            loss = ce(self.net.head(z)) + self.recon_weight * nn.functional.mse_loss(decoder(z), x)
        else:
            loss = ce(self.net(x))
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


class LateEMA(WeightAveraging):
    """An exponential moving average of the weights (decay ``decay`` a step) over the last
    half of a round's steps, which the network keeps when the round ends (the averaged
    teacher of Mean Teacher, FixMatch's evaluation model).

    Why the last half: a one-cycle round climbs to its peak rate and back, and an average
    from its first step would pull the round's starting weights into the result (at
    0.999 over 1,100 steps a third of it); the annealing half's iterates are the ones
    worth averaging, as they each fit the round's labels differently where those labels
    are wrong."""

    def __init__(self, decay: float, total_steps: int) -> None:
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.start = total_steps // 2

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self.start


def predict_proba(net: nn.Module, x: np.ndarray, batch_size: int = 256, *, views: int = 1,
                  augment: Mapping[str, float] | None = None, seed: int = 0,
                  channels_last: bool | None = None) -> np.ndarray:
    """uint8 images (N, C, H, W) or vectors (N, D) -> class probabilities (N, k) float32.

    ``views`` > 1 (images only): the mean over the images themselves and ``views`` - 1
    copies randomly rotated / shifted by ``augment`` (the training augmentation; seeded by
    ``seed``, per image whatever the batching, the global RNG untouched). A label guessed
    from several views of an image, as MixMatch guesses its pseudo-labels, does not hang on
    one border-line rendering."""
    net.eval()
    # ``channels_last`` (default: whenever a conv net sees images): on CPU, convolutions
    # ran 1.2x (encoder + head) and 2.8x (fresh CNN) faster channels-last in batches of 256 (bench/inference.py). The
    # net goes back to the default layout after, so that the next round trains as before.
    if channels_last is None:
        channels_last = x.ndim == 4 and any(isinstance(m, nn.Conv2d) for m in net.modules())
    layout = torch.channels_last if channels_last else torch.contiguous_format

    @torch.inference_mode()
    def one_view(angle: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> np.ndarray:
        out = []
        for i in range(0, len(x), batch_size):
            batch = to_float(torch.from_numpy(x[i:i + batch_size]))
            if angle is not None:
                batch = affine(batch, angle[i:i + batch_size], shift[i:i + batch_size])
            out.append(torch.softmax(net(batch.contiguous(memory_format=layout)), 1).numpy())
        return np.concatenate(out).astype(np.float64)

    # outside inference mode: parameters made there could never be trained again
    with torch.no_grad():
        net.to(memory_format=layout)
    try:
        total = one_view()
        if views > 1 and x.ndim == 4 and augment and (augment["degrees"] > 0 or augment["translate"] > 0):
            gen = torch.Generator().manual_seed(seed)  # each image's views, whatever the batching
            for _ in range(views - 1):
                total += one_view(*draw_affine(len(x), augment["degrees"], augment["translate"], generator=gen))
            total /= views
    finally:
        with torch.no_grad():
            net.to(memory_format=torch.contiguous_format)
    return total.astype(np.float32)


@dataclass
class SelfLabelResult:
    net: nn.Module | None         # the trained classifier; None when rounds == 0
    labels: np.ndarray            # (N,) final assignments of the images it was given
    confidence: np.ndarray        # (N,)
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per round: n_used, changed, loss
    relabel: dict[str, Any] = field(default_factory=dict)  # predict_proba's views, augment, seed for new images


def encoder_classifier(ae: Autoencoder, latent_dim: int, k: int, seed: int, decoder: bool = False) -> Classifier:
    """A copy of ``ae``'s trained encoder with a fresh (seeded) linear head: the
    autoencoder's own network, trained further on its clusters; with ``decoder``, a copy
    of its decoder too, for a reconstruction term while it trains."""
    torch.manual_seed(seed)
    return Classifier(copy.deepcopy(ae.encoder), latent_dim, k, copy.deepcopy(ae.decoder) if decoder else None)


def fresh_classifier(input_shape: tuple[int, ...], k: int, seed: int, channels: Sequence[int]) -> nn.Module:
    """A network that has never seen an autoencoder, seeded: a ``ConvNet`` of block widths
    ``channels`` for images (what learns pixels best), an ``MLPNet`` for feature vectors."""
    torch.manual_seed(seed)
    if len(input_shape) == 3:
        return ConvNet(tuple(input_shape), k, channels)
    return MLPNet(int(math.prod(input_shape)), k)


def sharpen(proba: np.ndarray, temperature: float = 0.5) -> np.ndarray:
    """Class probabilities (N, k) raised to 1 / ``temperature`` and renormalised, float32: a
    soft label that keeps the ranking and the doubt of a guess but pulls it toward its
    argmax (MixMatch's sharpening, T = 0.5)."""
    p = np.asarray(proba, dtype=np.float64) ** (1.0 / temperature)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def recipe(f: Mapping[str, Any]) -> dict[str, Any]:
    """``self_label``'s keyword arguments from the ``finetune`` config section that the
    autoencoder method and its raw twin share (the twin has no decoder: no recon_weight)."""
    keys = ("rounds", "epochs", "fraction", "lr", "batch_size", "augment", "label_smoothing", "lr_schedule",
            "min_steps", "budget_max_epochs", "views", "targets", "ema", "mixup", "restart")
    return {key: f[key] for key in keys}


def self_label(net: nn.Module, x: np.ndarray, labels: np.ndarray, typicality: np.ndarray, *, k: int,
               rounds: int, epochs: int, fraction: float, lr: float, batch_size: int,
               augment: Mapping[str, float], seed: int, neighbors: np.ndarray | None = None,
               trainer: Mapping[str, Any] | None = None, label_smoothing: float = 0.0,
               lr_schedule: str = "cosine", min_steps: int = 0, budget_max_epochs: int | None = None,
               recon_weight: float = 0.0,
               views: int = 1, targets: str = "hard", ema: float = 0.0,
               mixup: float = 0.0, restart: bool = False) -> SelfLabelResult:
    """Train ``net`` (images (N, C, H, W) or vectors (N, D) -> (N, k) logits) on x's most
    reliable pseudo-labels and relabel x, ``rounds`` times; ``net`` is trained in place.

    Each round trains on the ``fraction`` most reliable members of every cluster (the
    previous round's predictions after the first) and relabels all of x. ``neighbors``
    (N, n): indices of each point's nearest neighbours, for ``reliability``; ties (and
    everything, without neighbours) go by ``typicality``, then by the classifier's
    probability. A round lasts ``epochs`` or ``min_steps`` optimizer steps, whichever is
    longer: on a small dataset a few epochs are a handful of steps. ``recon_weight`` > 0
    with a ``Classifier`` that carries its decoder adds that weight x the reconstruction MSE
    of the augmented input to the loss; the decoder is dropped at the end. Each relabelling
    averages the classifier over ``views`` views of every image (``predict_proba``).
    ``targets="soft"``: from the second round on, the network learns the last relabelling's
    probabilities, sharpened (``sharpen``), instead of their argmax: a border-line image
    teaches its doubt rather than a coin flip (MixMatch's guessed labels; the first round
    has only the clusterer's hard assignments). ``ema`` > 0: each round ends with the
    exponential moving average (that decay a step) of its second half's weights (``LateEMA``).
    ``mixup`` > 0: trains on mixup pairs, their weight drawn from Beta(mixup, mixup).
    ``restart``: every round starts again from ``net``'s weights as given (Noisy Student's
    fresh student), so that no round inherits what the last one memorised of its wrong labels.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(x):
        raise ConfigError(f"{len(x)} images but {len(labels)} cluster assignments: re-run the cluster stage")
    result = SelfLabelResult(net=None, labels=labels, confidence=np.ones(len(x), dtype=np.float32),
                             # the last round's views: predict then repeats them on the same images
                             relabel={"views": views, "augment": dict(augment), "seed": seed + max(rounds - 1, 0)})
    if rounds == 0:
        return result
    pl.seed_everything(seed, workers=True, verbose=False)
    data = torch.from_numpy(np.ascontiguousarray(x))
    targs, lines = trainer_args({key: v for key, v in (trainer or {}).items()
                                 if key in ("accelerator", "deterministic", "precision", "enable_progress_bar")},
                                "self-labelling")
    tiebreak = np.asarray(typicality)
    proba = None  # the last relabelling's class probabilities (N, k)
    start = copy.deepcopy(net.state_dict()) if restart else None
    for r in range(rounds):
        if start is not None and r > 0:
            net.load_state_dict(start)
        idx = confident_subset(result.labels, reliability(result.labels, neighbors, tiebreak), k, fraction)
        y = torch.from_numpy(sharpen(proba[idx])) if targets == "soft" and proba is not None \
            else torch.from_numpy(result.labels[idx])
        dl = DataLoader(TensorDataset(data[idx], y), batch_size=batch_size, shuffle=True)
        n_epochs = max(epochs, budget_epochs(min_steps, len(dl), budget_max_epochs))
        lit = LitSelfLabel(net, lr=lr, epochs=n_epochs, augment=augment, label_smoothing=label_smoothing,
                           lr_schedule=lr_schedule, recon_weight=recon_weight, mixup=mixup)
        t = pl.Trainer(max_epochs=n_epochs, logger=False, enable_checkpointing=False, devices=1,
                       callbacks=[*lines, *([LateEMA(ema, n_epochs * len(dl))] if ema > 0 else [])], **targs)
        net.train()  # Lightning keeps a module's mode: a loaded encoder, or the last round's net, is in eval mode
        t.fit(lit, dl)
        proba = predict_proba(net, x, views=views, augment=augment, seed=seed + r)
        new = proba.argmax(1).astype(np.int64)
        result.rounds.append({"round": r, "n_used": int(len(idx)), "epochs": n_epochs,
                              "changed": int((new != result.labels).sum()),
                              "loss": float(t.callback_metrics["finetune/loss"])})
        result.labels, result.confidence = new, proba.max(1)
        tiebreak = result.confidence
    if getattr(net, "decoder", None) is not None:
        net.decoder = None  # a classifier from here on: predict and save need only encoder and head
    result.net = net.eval()
    return result


def save(result: SelfLabelResult, path: str | Path, model: Mapping[str, Any] | None = None,
         input_shape: Sequence[int] | None = None) -> None:
    """Write the classifier (its kind and shape; for an encoder + head the ``model``
    config of its architecture and the ``input_shape``, so that it rebuilds without the
    config; its weights; the per-round summary) atomically; with rounds=0, a checkpoint
    that says there is no classifier."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"rounds": result.rounds, "relabel": result.relabel, "state_dict": None}
    if isinstance(result.net, ConvNet):
        payload.update(classifier="conv", input_shape=list(result.net.input_shape), k=result.net.k,
                       channels=list(result.net.channels), state_dict=result.net.state_dict())
    elif isinstance(result.net, MLPNet):
        payload.update(classifier="mlp", n_in=result.net.n_in, k=result.net.k, width=result.net.width,
                       state_dict=result.net.state_dict())
    elif result.net is not None:
        if model is None or input_shape is None:
            raise ConfigError("saving an encoder classifier needs the model config and input shape it was built from")
        payload.update(classifier="encoder", autoencoder_hparams={"model": dict(model), "input_shape": list(input_shape)},
                       k=result.net.head.out_features, latent_dim=result.net.head.in_features,
                       state_dict=result.net.state_dict())
    with atomic(path) as tmp:
        torch.save(payload, tmp)


def relabel_args(path: str | Path) -> dict[str, Any]:
    """How the saved classifier relabels images (``predict_proba``'s views, augment, seed);
    one view for checkpoints written before finetune.views existed."""
    return torch.load(path, map_location="cpu", weights_only=True).get("relabel") or {"views": 1}


def load(path: str | Path) -> nn.Module:
    """The saved classifier in eval mode (weights_only: no code runs on load)."""
    from latentlab.models import build

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt["state_dict"] is None:
        raise ConfigError(f"{path} holds no classifier: it was written with finetune.rounds=0")
    if ckpt.get("classifier") == "conv":
        # checkpoints written before finetune.channels existed hold the (32, 64) network
        net: nn.Module = ConvNet(tuple(ckpt["input_shape"]), ckpt["k"], ckpt.get("channels", (32, 64)))
    elif ckpt.get("classifier") == "mlp":
        net = MLPNet(ckpt["n_in"], ckpt["k"], ckpt["width"])
    else:
        hp = ckpt["autoencoder_hparams"]
        ae = build(hp["model"], tuple(hp["input_shape"]))
        net = Classifier(ae.encoder, ckpt["latent_dim"], ckpt["k"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()
