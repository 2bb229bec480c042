"""Deep embedded clustering: the encoder and the cluster centres trained together.

DEC (Xie et al. 2016) keeps a centre per cluster in the code space, gives every point a
soft assignment ``q`` (a Student-t kernel on its distance to each centre) and trains
encoder and centres to move ``q`` towards a sharpened copy of itself, ``p``, recomputed
every ``update`` steps: the confident assignments pull their cluster together. DCEC /
IDEC (Guo et al. 2017) keep the decoder's reconstruction loss (x ``gamma``) so that the
code keeps describing the image; DEC-DA (Guo et al. 2018) encodes a randomly rotated and
shifted copy of each image and reconstructs the original, which is most of its gain.

Measured on full MNIST (dev seeds 100 / 101, conv autoencoder, 10-d code, k-means start
0.779 / 0.757 ACC): 0.926 / 0.875 after 6000 steps of 256; without augmentation 0.834 on
seed 100. It sharpens the clusters it starts from: from clusters that are not round in
the raw code (UMAP + GMM's) it loses ground, so it is the k-means user's method.

Two uses, as for self-labelling: ``autoencoder_dec`` trains the autoencoder's own encoder
and decoder from the cluster stage's clusters; its raw twin ``raw_dec`` trains, from the
pixels' clusters, an encoder that starts as the pixels' PCA (``linear_encoder``; no decoder,
so no reconstruction term). A random network is no twin: DEC only sharpens a code in which
the clusters already show, and from a fresh CNN's it collapsed (0.13 ACC on 2,000 images).
From the pixels' PCA it collapses too (full MNIST, dev seed 100, k-means start 0.533:
0.226 after 6000 steps), and giving it the PCA's own decoder and reconstruction term
(``linear_decoder``: a linear autoencoder) does not hold it (gamma 0.1: 0.224, gamma 1:
0.220; at a tenth of the learning rate 0.300; pipelines/calibrate.py raw_dec). So the twin
keeps no decoder: what holds DEC is the autoencoder's code, which is the comparison.

Shapes: images uint8 (N, C, H, W) or vectors float (N, D); labels int (N,).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentlab.errors import ConfigError
from latentlab.files import atomic
from latentlab.models import from_checkpoint, is_images, random_affine, read_checkpoint, to_float


def soft_assign(z: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """DEC's q: Student-t (one degree of freedom) similarity of codes (N, d) to centres (k, d), rows sum to 1."""
    q = 1.0 / (1.0 + torch.cdist(z, centres).pow(2))
    return q / q.sum(1, keepdim=True)


def sharpen(q: torch.Tensor) -> torch.Tensor:
    """DEC's target p (N, k): q squared, divided by each cluster's total weight (large
    clusters do not swallow the rest), rows renormalised."""
    w = q.pow(2) / q.sum(0)
    return w / w.sum(1, keepdim=True)


def linear_encoder(pca) -> nn.Module:
    """A fitted scikit-learn PCA as a trainable encoder, (N, ...) inputs in [0, 1] -> (N, n_components):
    flatten, subtract the mean, project. The raw twin's starting code: the pixels' own principal
    components (the features raw_cluster clusters), no autoencoder."""
    components = torch.as_tensor(pca.components_, dtype=torch.float32)
    layer = nn.Linear(components.shape[1], components.shape[0])
    with torch.no_grad():
        layer.weight.copy_(components)
        layer.bias.copy_(-components @ torch.as_tensor(pca.mean_, dtype=torch.float32))
    return nn.Sequential(nn.Flatten(), layer)


def linear_decoder(pca, shape: tuple[int, ...]) -> nn.Module:
    """The fitted PCA's reconstruction as a trainable decoder, (N, n_components) -> (N, *shape):
    project back with the components, add the mean. With ``linear_encoder`` it is the pixels'
    own linear autoencoder (PCA is the best one), what the raw twin's reconstruction term uses."""
    components = torch.as_tensor(pca.components_, dtype=torch.float32)
    layer = nn.Linear(components.shape[0], components.shape[1])
    with torch.no_grad():
        layer.weight.copy_(components.T)
        layer.bias.copy_(torch.as_tensor(pca.mean_, dtype=torch.float32))
    return nn.Sequential(layer, nn.Unflatten(1, tuple(shape)))


@dataclass
class DECResult:
    labels: np.ndarray                  # (N,) final assignments of the fitted points
    encoder: nn.Module                  # trained, in eval mode
    centres: torch.Tensor               # (k, d)
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)  # per target update: step, changed

    def predict(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Assignments (N,) of new points: the nearest centre under the Student-t kernel."""
        return soft_assign(codes(self.encoder, x, batch_size), self.centres).argmax(1).numpy().astype(np.int64)


@torch.inference_mode()
def codes(encoder: nn.Module, x: np.ndarray, batch_size: int = 2048) -> torch.Tensor:
    """Codes (N, d) of x, in eval mode and channels-last for images (faster convolutions on CPU).
    models.encode would also decode every image for its MSE, which the targets do not need."""
    encoder.eval()
    out = []
    for i in range(0, len(x), batch_size):
        batch = to_float(torch.from_numpy(x[i:i + batch_size]))
        out.append(encoder(batch.contiguous(memory_format=torch.channels_last) if is_images(batch) else batch))
    return torch.cat(out).float()


def fit(encoder: nn.Module, x: np.ndarray, init: np.ndarray, *, decoder: nn.Module | None = None,
        steps: int, update: int, tol: float, gamma: float, lr: float, batch_size: int,
        augment: Mapping[str, float], seed: int,
        on_update: Callable[[int, np.ndarray], None] | None = None) -> DECResult:
    """DEC on x from the clusters ``init`` (N,): centres start at the means of their
    members' codes; encoder (and ``decoder``, with ``gamma`` > 0) and centres are trained
    with Adam on KL(p || q) + ``gamma`` x MSE(decoder(encoder(x')), x), x' a copy of x
    rotated / shifted by ``augment`` (images only), for at most ``steps`` batches, stopping
    early once fewer than ``tol`` of the labels change between two target updates.
    ``encoder`` and ``decoder`` are trained in place. ``on_update(step, labels)`` is called
    at every target update (pipelines/calibrate.py scores them)."""
    init = np.asarray(init, dtype=np.int64)
    if len(init) != len(x):
        raise ConfigError(f"{len(x)} samples but {len(init)} cluster assignments: re-run the cluster stage")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    z = codes(encoder, x)
    ids = np.unique(init)
    centres = nn.Parameter(torch.stack([z[torch.from_numpy(init == c)].mean(0) for c in ids]))
    labels = np.searchsorted(ids, init)  # cluster ids 0..k-1 in the order of the centres
    params = [*encoder.parameters(), centres, *(decoder.parameters() if decoder is not None and gamma > 0 else ())]
    opt = torch.optim.Adam(params, lr=lr)
    data = torch.from_numpy(np.ascontiguousarray(x))
    images = x.ndim == 4
    distort = images and (augment["degrees"] > 0 or augment["translate"] > 0)
    layout = torch.channels_last if images else torch.contiguous_format
    history: list[dict[str, Any]] = []
    order, pos, step, target = rng.permutation(len(x)), 0, 0, None
    while step < steps:
        if step % update == 0:
            with torch.inference_mode():
                q = soft_assign(codes(encoder, x), centres)
            target = sharpen(q)
            new = q.argmax(1).numpy().astype(np.int64)
            changed = float((new != labels).mean())
            labels = new
            history.append({"step": step, "changed": changed})
            if on_update is not None:
                on_update(step, labels)
            if step > 0 and changed < tol:
                break
            encoder.train()
            if decoder is not None:
                decoder.train()
        if pos + batch_size > len(x):
            order, pos = rng.permutation(len(x)), 0
        idx = torch.from_numpy(order[pos:pos + batch_size])
        pos += batch_size
        xb = to_float(data[idx]).contiguous(memory_format=layout)
        zb = encoder(random_affine(xb, augment["degrees"], augment["translate"]) if distort else xb)
        loss = nn.functional.kl_div(soft_assign(zb, centres).log(), target[idx], reduction="batchmean")
        if decoder is not None and gamma > 0:
            loss = loss + gamma * nn.functional.mse_loss(decoder(zb), xb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    result = DECResult(labels=labels, encoder=encoder.eval(), centres=centres.detach(), steps=step, history=history)
    if step == steps:  # ran to the end: the labels of the trained encoder, not of the last update
        result.labels = result.predict(x)
    return result



def save(path: str | Path, result: DECResult | None, hparams: Mapping[str, Any] | None = None,
         autoencoder: nn.Module | None = None) -> None:
    """What ``latentlab predict`` assigns new points with, written atomically: the
    autoencoder whose encoder DEC trained, in the training checkpoint's format (its
    ``hparams``: model config and input shape; its weights), the centres, and the fit's
    labels, steps and history. ``result=None`` (dec.enabled=false): a file that says so."""
    payload: dict[str, Any] = {"enabled": result is not None}
    if result is not None:
        if hparams is None or autoencoder is None:
            raise ConfigError("saving a DEC model needs the autoencoder and the hyper-parameters it was built from")
        payload.update(hyper_parameters=dict(hparams), state_dict=autoencoder.state_dict(), centres=result.centres,
                       labels=torch.from_numpy(result.labels), steps=result.steps, history=result.history)
    with atomic(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path) -> DECResult:
    """The saved DEC model, its encoder in eval mode (weights_only: no code runs on load)."""
    ckpt = read_checkpoint(path)
    if not ckpt["enabled"]:
        raise ConfigError(f"{path} holds no DEC model: it was written with dec.enabled=false; "
                          "re-run with dec.enabled=true")
    net = from_checkpoint(ckpt)
    return DECResult(labels=ckpt["labels"].numpy(), encoder=net.encoder, centres=ckpt["centres"],
                     steps=ckpt["steps"], history=ckpt["history"])
