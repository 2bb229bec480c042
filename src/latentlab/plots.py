"""Figures of a run. Each function takes arrays and writes one PNG."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from latentlab import metric_names as M  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def latent_scatter(z2: np.ndarray, labels: np.ndarray, clusters: np.ndarray, path: str | Path,
                   title: str = "latent space (PCA to 2-D)") -> Path:
    """z2: (N, 2) projected latents; side by side coloured by true label and by cluster."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), sharex=True, sharey=True)
    for ax, c, name in ((axes[0], labels, "true label"), (axes[1], clusters, "k-means cluster")):
        sc = ax.scatter(z2[:, 0], z2[:, 1], c=c, cmap="tab10", s=2, alpha=0.6, rasterized=True,
                        vmin=-0.5, vmax=max(9.5, float(c.max()) + 0.5))
        ax.set_title(f"coloured by {name}")
        ax.set_xlabel("PC 1")
        fig.colorbar(sc, ax=ax, ticks=np.unique(c)[:20])
    axes[0].set_ylabel("PC 2")
    fig.suptitle(title)
    return save_figure(fig, path)


def reconstruction_grid(originals: np.ndarray, recons: np.ndarray, path: str | Path) -> Path:
    """originals, recons: (n, C, H, W) in [0, 1]; top row originals, bottom reconstructions."""
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(n * 0.9, 2.2), squeeze=False)
    for i in range(n):
        for row, imgs in enumerate((originals, recons)):
            img = np.moveaxis(imgs[i], 0, -1)
            axes[row, i].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("original", loc="left", fontsize=8)
    axes[1, 0].set_title("reconstruction", loc="left", fontsize=8)
    return save_figure(fig, path)


def contingency_heatmap(table: np.ndarray, path: str | Path, title: str) -> Path:
    """table: (n_classes, n_clusters) counts, columns ordered by their best-matching label."""
    order = np.argsort(table.argmax(axis=0), kind="stable")
    t = table[:, order]
    fig, ax = plt.subplots(figsize=(1 + 0.55 * t.shape[1], 1 + 0.5 * t.shape[0]))
    ax.imshow(t / np.maximum(t.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(t):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > 0.5 * t[i].sum() else "black")
    ax.set_xticks(range(t.shape[1]), [str(c) for c in order])
    ax.set_yticks(range(t.shape[0]))
    ax.set_xlabel("cluster")
    ax.set_ylabel("true label")
    ax.set_title(title)
    return save_figure(fig, path)


def loss_curve(history: list[dict[str, float]], path: str | Path) -> Path:
    """Per-epoch train and validation reconstruction MSE."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in history]
    for key in (M.TRAIN_LOSS, M.VAL_LOSS):
        ax.plot(epochs, [r[key] for r in history], marker="o", ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction MSE")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
