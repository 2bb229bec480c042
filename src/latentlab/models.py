"""Autoencoders: the networks (plain ``nn.Module``), building them from a config, loading
a saved one and encoding with it. No Lightning here: stages that only use a trained
model (embed, export, evaluate, anomaly scoring) start ~10 s faster without it
(BENCHMARKS.md); the training logic is in ``training``.

Shapes: images enter as float tensors in [0, 1] of shape (N, C, H, W); latents are
(N, latent_dim); reconstructions have the input's shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from latentlab.choices import ACTIVATIONS as ACTIVATION_NAMES
from latentlab.choices import MODELS, check

ACTIVATIONS = {name: getattr(nn, cls) for name, cls in ACTIVATION_NAMES.items()}


class Autoencoder(nn.Module):
    """Base: ``encode`` (N, C, H, W) -> (N, d), ``decode`` back, ``forward`` = round trip."""

    encoder: nn.Module
    decoder: nn.Module

    def init_weights(self) -> None:
        """He initialisation: PyTorch's default leaves deep ReLU stacks stuck for epochs
        at the mean-image plateau (measured: MSE 0.057 vs 0.029 after 3 epochs on 10k MNIST)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def dense_decoder(latent_dim: int, hidden, input_shape: tuple[int, ...], act: type[nn.Module]) -> nn.Sequential:
    """code (N, d) -> a dense layer per width of ``hidden`` -> (N, *input_shape); a sigmoid
    output for images (in [0, 1]), a linear one for feature vectors (standardised, unbounded)."""
    sizes = [latent_dim, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    out = [nn.Sigmoid()] if len(input_shape) == 3 else []
    return nn.Sequential(*layers, nn.Linear(sizes[-1], math.prod(input_shape)), *out,
                         nn.Unflatten(1, tuple(input_shape)))


def mlp_widths(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``hidden: auto``: DEC's 500-500-2000 for images; for D features, two layers sized to
    them, max(64, 2D) and max(32, D) (PyOD's AutoEncoder default is 64-32)."""
    if len(input_shape) > 1:
        return (500, 500, 2000)
    d = int(input_shape[0])
    return (max(64, 2 * d), max(32, d))


class MLPAutoencoder(Autoencoder):
    """Dense encoder in -> hidden... -> d, mirrored decoder; a sigmoid output for images
    (in [0, 1]), a linear one for feature vectors (standardised, unbounded). ``hidden``: the
    widths, or ``auto`` (``mlp_widths``)."""

    def __init__(self, input_shape: tuple[int, ...], latent_dim: int = 10,
                 hidden: tuple[int, ...] | str = (500, 500, 2000), activation: str = "relu",
                 input_dropout: float = 0.0) -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        n_in = math.prod(input_shape)
        hidden = mlp_widths(tuple(input_shape)) if hidden == "auto" else tuple(hidden)
        sizes = [n_in, *hidden]
        # Input dropout makes it a denoising autoencoder (active in training only).
        enc: list[nn.Module] = [nn.Flatten(), nn.Dropout(input_dropout)]
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), act()]
        # No activation on the code: k-means wants an unconstrained latent space.
        enc.append(nn.Linear(sizes[-1], latent_dim))
        self.encoder, self.decoder = nn.Sequential(*enc), dense_decoder(latent_dim, list(hidden)[::-1], input_shape, act)
        self.init_weights()


class ConvEncoder(nn.Sequential):
    """A conv encoder's layers, fed its input in channels-last memory layout (PyTorch's CPU
    convolutions run faster on it: a conv autoencoder's training step takes 0.76-0.82x the
    time, side by side), after input dropout when training. Both live in ``forward``, not in
    layers of their own, so that the layers' names (the checkpoint's keys) stay what they were,
    and the encoder alone (the self-labelling classifier) does the same."""

    def __init__(self, *layers: nn.Module, input_dropout: float = 0.0) -> None:
        super().__init__(*layers)
        self.input_dropout = input_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.dropout(x.contiguous(memory_format=torch.channels_last), self.input_dropout, self.training)
        return super().forward(x)


class ConvAutoencoder(Autoencoder):
    """Stride-2 3x3 convolutions per channel width, a linear code, and a mirrored decoder of
    transposed convolutions; or, with ``decoder_hidden`` (e.g. [500]), a dense decoder
    code -> hidden... -> image (cheaper: the transposed convolutions at full resolution
    cost as much as the encoder). ``input_dropout`` > 0 makes it a denoising autoencoder."""

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int = 10,
                 channels: tuple[int, ...] = (32, 64, 128), activation: str = "relu",
                 input_dropout: float = 0.0, decoder_hidden: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if len(input_shape) != 3:
            from latentlab.errors import ConfigError

            raise ConfigError(f"model=conv needs images (C, H, W), but the data are vectors of shape "
                              f"{tuple(input_shape)}; use model=mlp")
        act = ACTIVATIONS[activation]
        c_in, h, w = input_shape
        enc: list[nn.Module] = []
        sizes = [(h, w)]
        prev = c_in
        for c in channels:
            enc += [nn.Conv2d(prev, c, 3, stride=2, padding=1), act()]
            prev = c
            h, w = (h + 1) // 2, (w + 1) // 2
            sizes.append((h, w))
        flat = prev * h * w
        enc += [nn.Flatten(), nn.Linear(flat, latent_dim)]
        if decoder_hidden is not None:
            self.decoder = dense_decoder(latent_dim, decoder_hidden, input_shape, act)
        else:
            self.decoder = nn.Sequential(*self._conv_decoder(latent_dim, channels, c_in, sizes, prev, act))
        self.encoder = ConvEncoder(*enc, input_dropout=input_dropout)
        self.init_weights()
        self.to(memory_format=torch.channels_last)  # the conv weights in the layout ConvEncoder feeds them

    @staticmethod
    def _conv_decoder(latent_dim: int, channels: tuple[int, ...], c_in: int, sizes: list[tuple[int, int]],
                      prev: int, act: type[nn.Module]) -> list[nn.Module]:
        """code -> the last conv block's maps -> transposed convolutions back up the ``sizes`` the encoder went down."""
        h, w = sizes[-1]
        dec: list[nn.Module] = [nn.Linear(latent_dim, prev * h * w), act(), nn.Unflatten(1, (prev, h, w))]
        outs = [*reversed(channels[:-1]), c_in]
        for i, c in enumerate(outs):
            # output_padding restores odd sizes (28 -> 14 -> 7 -> 4 -> 7 -> 14 -> 28).
            th, tw = sizes[-2 - i]
            oh, ow = sizes[-1 - i]
            pad = (th - (2 * oh - 1), tw - (2 * ow - 1))
            dec.append(nn.ConvTranspose2d(prev, c, 3, stride=2, padding=1, output_padding=pad))
            dec.append(act() if i < len(outs) - 1 else nn.Sigmoid())
            prev = c
        return dec


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images (kept that way in memory: 4x smaller) to floats in [0, 1]; feature
    vectors (already scaled when the data was prepared) as float32."""
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()


def is_images(x: torch.Tensor) -> bool:
    """(N, C, H, W) images, not (N, D) feature vectors: only images are rotated and shifted."""
    return x.ndim == 4


def random_affine(x: torch.Tensor, degrees: float, translate: float) -> torch.Tensor:
    """Each image of x (N, C, H, W) rotated by up to ``degrees`` and shifted by up to
    ``translate`` of its size, independently (torchvision's RandomAffine draws one
    transform per call, i.e. per batch). Uses the global torch RNG, seeded by Lightning."""
    angle, shift = draw_affine(len(x), degrees, translate, device=x.device)
    return affine(x, angle, shift)


def draw_affine(n: int, degrees: float, translate: float, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """n random rotations (radians, (n,)) of up to ``degrees`` and shifts ((n, 2), in
    affine_grid's [-1, 1] coordinates) of up to ``translate`` of the image size."""
    angle = (torch.rand(n, generator=generator, device=device) * 2 - 1) * math.radians(degrees)
    # affine_grid works in [-1, 1] coordinates: a shift of f of the size is 2f there.
    shift = (torch.rand(n, 2, generator=generator, device=device) * 2 - 1) * 2 * translate
    return angle, shift


def affine(x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each image of x (N, C, H, W) rotated by angle[i] and shifted by shift[i] (``draw_affine``)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def per_sample_mse(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """(N, ...) x2 -> (N,) mean squared error of each sample."""
    return (recon - x).pow(2).flatten(1).mean(1)


# A training whose reconstruction is no better than this fraction of the mean sample's
# error has learnt nothing about the individual samples: it stalled (e.g. a latent-2
# sweep job that stayed at the same val loss from epoch 3 and clustered at ACC 0.22).
STALL_RATIO = 0.9


def mean_sample_mse(x_ref: np.ndarray, x: np.ndarray, batch_size: int = 4096) -> float:
    """The reconstruction MSE of a model that outputs the mean of ``x_ref`` (N, ...) for every
    sample of ``x`` (M, ...): the level a stalled training sits at."""
    mean = sum(to_float(torch.from_numpy(x_ref[i:i + batch_size])).sum(0)
               for i in range(0, len(x_ref), batch_size)) / len(x_ref)
    total = sum(float((to_float(torch.from_numpy(x[i:i + batch_size])) - mean).pow(2).flatten(1).mean(1).sum())
                for i in range(0, len(x), batch_size))
    return total / len(x)


def stalled(recon_mse: float, mean_mse: float) -> bool:
    """True when a reconstruction error ``recon_mse`` is no real improvement on the mean sample's."""
    return recon_mse >= STALL_RATIO * mean_mse


def build(model: dict[str, Any], input_shape: tuple[int, ...]) -> Autoencoder:
    """The network a ``model`` config node (or a checkpoint's copy of it) describes.
    A checkpoint carries that node: naming any class but the documented ones would run
    its code on load, so ``_target_`` is checked first."""
    from hydra.utils import instantiate

    check("model._target_", model.get("_target_"), MODELS)
    return instantiate(model, input_shape=tuple(input_shape))


def load(path) -> Autoencoder:
    """Rebuild a saved autoencoder in eval mode (weights_only: no code runs on load)."""
    return from_checkpoint(read_checkpoint(path))


def read_checkpoint(path) -> dict[str, Any]:
    """A saved autoencoder's checkpoint: its ``hyper_parameters`` (the ``model`` config and
    ``input_shape``, what rebuilds it) and ``state_dict``; weights_only: no code runs on load."""
    return torch.load(path, map_location="cpu", weights_only=True)


def from_checkpoint(ckpt: Mapping[str, Any]) -> Autoencoder:
    """The autoencoder a checkpoint (the training's, or any in its format) holds, in eval mode."""
    hp = ckpt["hyper_parameters"]
    net = build(hp["model"], tuple(hp["input_shape"]))
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


@torch.inference_mode()
def encode(net: Autoencoder, x, batch_size: int = 2048, desc: str = "encoding"):
    """uint8 images (N, C, H, W) -> latents (N, d) float32 and per-sample MSE (N,)."""
    import sys

    import numpy as np
    from tqdm.auto import tqdm

    net.eval()
    zs, errs = [], []
    # a bar on a terminal; in a log (dvc repro's, CI's) the stage's summary line says it all
    for i in tqdm(range(0, len(x), batch_size), desc=desc, unit="batch", leave=False, disable=not sys.stdout.isatty()):
        xb = to_float(torch.from_numpy(x[i:i + batch_size]))
        z = net.encode(xb)
        zs.append(z.numpy())
        errs.append(per_sample_mse(xb, net.decode(z)).numpy())
    return np.concatenate(zs).astype(np.float32), np.concatenate(errs).astype(np.float32)
