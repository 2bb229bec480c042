"""Figures of a run. Each function takes arrays and writes one PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from latentlab import metric_names as M  # noqa: E402
from latentlab.files import atomic  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    try:
        with atomic(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def latent_scatter(z2: np.ndarray, labels: np.ndarray, clusters: np.ndarray, path: str | Path,
                   title: str = "latent space (PCA to 2-D)", first: str = "true label") -> Path:
    """z2: (N, 2) projected latents; side by side coloured by ``labels`` (the true labels,
    or without them another clustering, named by ``first``) and by the autoencoder's clusters."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), sharex=True, sharey=True)
    for ax, c, name in ((axes[0], labels, first), (axes[1], clusters, "autoencoder cluster")):
        sc = ax.scatter(z2[:, 0], z2[:, 1], c=c, cmap="tab10", s=2, alpha=0.6, rasterized=True,
                        vmin=-0.5, vmax=max(9.5, float(c.max()) + 0.5))
        ax.set_title(f"coloured by {name}")
        ax.set_xlabel("PC 1")
        fig.colorbar(sc, ax=ax, ticks=np.unique(c)[:20])
    axes[0].set_ylabel("PC 2")
    fig.suptitle(title)
    return save_figure(fig, path)


def _image_rows(rows: list[tuple[str, np.ndarray]], path: str | Path,
                captions: list[str] | None = None) -> Path:
    """rows: (label, images (n, C, H, W) in [0, 1]) drawn one above the other."""
    n = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, 1.1 * len(rows) + 0.2), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.axis("off")
            if i < len(imgs):
                img = np.moveaxis(imgs[i], 0, -1)
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(label, loc="left", fontsize=8)
    for i, c in enumerate(captions or []):
        axes[0, i].text(0.5, -0.08, c, transform=axes[0, i].transAxes, ha="center", va="top", fontsize=6)
    return save_figure(fig, path)


def reconstruction_grid(originals: np.ndarray, recons: np.ndarray, path: str | Path) -> Path:
    """originals, recons: (n, C, H, W) in [0, 1]; top row originals, bottom reconstructions."""
    return _image_rows([("original", originals), ("reconstruction", recons)], path)


def anomaly_extremes(images: np.ndarray, recons: np.ndarray, scores: np.ndarray, is_anomaly: np.ndarray,
                     path: str | Path, n: int = 10) -> Path:
    """The n most and n least anomalous test images (N, C, H, W) in [0, 1], with reconstructions."""
    order = np.argsort(scores)
    top, bottom = order[::-1][:n], order[:n]
    rows = [("most anomalous", images[top]), ("reconstruction", recons[top]),
            ("least anomalous", images[bottom]), ("reconstruction", recons[bottom])]
    mark = {1: " A", 0: " N"}  # anything else: no label says
    captions = [f"{scores[i]:.3g}{mark.get(int(is_anomaly[i]), '')}" for i in top]
    return _image_rows(rows, path, captions)


def vector_extremes(x: np.ndarray, recons: np.ndarray, scores: np.ndarray, is_anomaly: np.ndarray,
                    path: str | Path, n: int = 3) -> Path:
    """Feature vectors (N, D): the n most and n least anomalous test samples, each a panel
    of its (scaled) features as bars and the autoencoder's reconstruction as a line; the
    title gives the score and, where labels say, whether it is an anomaly (A) or normal (N)."""
    order = np.argsort(scores)
    rows = [("most anomalous", order[::-1][:n]), ("least anomalous", order[:n])]
    n = max(len(r) for _, r in rows)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 4.8), sharey=True, squeeze=False)
    mark = {1: ", A", 0: ", N"}
    d = np.arange(x.shape[1])
    for r, (name, idx) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            if c >= len(idx):
                ax.axis("off")
                continue
            i = idx[c]
            ax.bar(d, x[i], color="0.7", label="sample")
            ax.plot(d, recons[i], color="C3", lw=1.2, label="reconstruction")
            ax.set_title(f"{name}: {scores[i]:.3g}{mark.get(int(is_anomaly[i]), '')}", fontsize=8)
            ax.set_xlabel("feature", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle("anomaly score (A: anomaly, N: normal, by the labels)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def score_histogram(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float, path: str | Path,
                    title: str = "anomaly score") -> Path:
    """Score distributions of normal and anomalous test samples (densities: anomalies are rare)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.histogram_bin_edges(scores, bins=60)
    for flag, name, color in ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red")):
        sel = scores[is_anomaly == flag]
        if len(sel) == 0:
            continue
        ax.hist(sel, bins=bins, density=True, alpha=0.5, color=color, label=f"{name} (n={len(sel)})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel(title)
    ax.set_ylabel("density")
    ax.legend()
    return save_figure(fig, path)


def roc_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """ROC and precision-recall curves side by side, one line per named test set
    (is_anomaly (N,) 0/1, scores (N,)), with AUROC, average precision and the PR chance levels."""
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    fig, (roc, pr) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, (name, (y, s)) in enumerate(curves.items()):
        RocCurveDisplay.from_predictions(y, s, ax=roc, name=name, plot_chance_level=i == 0)
        PrecisionRecallDisplay.from_predictions(y, s, ax=pr, name=name, plot_chance_level=True,
                                                chance_level_kw={"color": f"C{i}", "alpha": 0.4})
    roc.set_title("ROC")
    pr.set_title("precision-recall (dashed: chance = anomaly fraction)")
    for ax in (roc, pr):
        ax.legend(fontsize=7, loc="lower right" if ax is roc else "lower left")
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
