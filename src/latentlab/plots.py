"""Figures of a run. Each function takes arrays and writes one PNG."""

from __future__ import annotations

from collections.abc import Mapping
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


def matched_colours(reference: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """(N,) colour index per point for ``clusters``: each cluster takes the colour of the
    reference group it overlaps most under a one-to-one (Hungarian) matching, so that a
    cluster that is digit 7 is drawn in digit 7's colour; unmatched clusters get colours
    past the reference's."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    refs, clus = np.unique(reference), np.unique(clusters)
    table = contingency_matrix(reference, clusters)  # (refs, clus)
    rows, cols = linear_sum_assignment(table, maximize=True)
    colour = {clus[c]: int(r) for r, c in zip(rows, cols)}  # table rows are refs in sorted order
    extra = iter(range(len(refs), len(refs) + len(clus)))
    colour.update({c: next(extra) for c in clus if c not in colour})
    return np.array([colour[c] for c in clusters])


def latent_map(z2: np.ndarray, reference: np.ndarray, clusters: np.ndarray, path: str | Path, *,
               reference_name: str = "true label", clusters_name: str = "autoencoder cluster",
               title: str = "latent space, UMAP to 2-D") -> Path:
    """z2: (N, 2) a 2-D map of the latents. Left: points coloured by ``reference`` (N,) (the
    true labels, or without them another clustering); right: by ``clusters`` (N,), each cluster
    in the colour of the reference group it is matched to (Hungarian), so agreement reads as
    the same picture and a mistake as a patch of another colour."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.8), sharex=True, sharey=True)
    refs = np.unique(reference)
    ref_colour = np.searchsorted(refs, reference)
    cmap = plt.get_cmap("tab20" if len(refs) > 10 else "tab10")
    panels = ((axes[0], ref_colour, f"coloured by {reference_name}"),
              (axes[1], matched_colours(reference, clusters),
               f"coloured by {clusters_name}\n(colour of the {reference_name} it is matched to)"))
    for ax, c, name in panels:
        ax.scatter(z2[:, 0], z2[:, 1], c=cmap(c % cmap.N), s=2, alpha=0.6, rasterized=True, linewidths=0)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for j, r in enumerate(refs):  # label each reference group at its median position
        cx, cy = np.median(z2[reference == r], axis=0)
        axes[0].text(cx, cy, str(r), fontsize=11, weight="bold", ha="center", va="center",
                     bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0})
    fig.suptitle(f"{title} ({len(z2):,} points)")
    fig.tight_layout()
    return save_figure(fig, path)


def twin_rows(runs: list[Mapping[str, Mapping[str, float]]], twins: Mapping[str, str]) -> dict[str, dict]:
    """``twin_bars``' rows from runs [{method: {"acc": .., "nmi": ..}}] (one or several seeds):
    per autoencoder method of ``twins`` ({method: its raw twin}), the mean, min and max over
    the runs of its scores and its twin's. Missing or NaN values are skipped; a method with
    no value left for one of the four is left out."""
    rows: dict[str, dict] = {}
    for m, twin in twins.items():
        vals = {f"{p}{s}": [v for r in runs if not np.isnan(v := float(r.get(n, {}).get(s, np.nan)))]
                for s in ("acc", "nmi") for p, n in (("", m), ("twin_", twin))}
        if all(vals.values()):
            rows[m] = {"twin": twin, **{k: (float(np.mean(v)), min(v), max(v)) for k, v in vals.items()}}
    return rows


def twin_bars(rows: dict[str, dict[str, tuple[float, float, float]]], path: str | Path,
              title: str = "what the latent space bought: each autoencoder method beside its raw twin") -> Path:
    """rows: {autoencoder method: {"twin": name, "acc": (mean, min, max), "nmi": ..., "twin_acc": ...,
    "twin_nmi": ...}}; ACC and NMI panels, a pair of bars per method, whiskers the range over
    seeds (none for a single run)."""
    methods = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.arange(len(methods))
    for ax, score in zip(axes, ("acc", "nmi")):
        for off, key, colour, label in ((-0.2, score, "C0", "autoencoder method"),
                                        (0.2, f"twin_{score}", "0.65", "its raw twin")):
            mean, lo, hi = (np.array([rows[m][key][i] for m in methods]) for i in range(3))
            bars = ax.bar(x + off, mean, 0.4, color=colour, label=label,
                          yerr=[mean - lo, hi - mean] if (hi > lo).any() else None, capsize=3)
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ax.set_xticks(x, [f"{m}\nvs {rows[m]['twin']}" for m in methods], fontsize=7)
        ax.set_ylabel(score.upper())
        ax.set_ylim(0, 1.08)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _image_rows(rows: list[tuple[str, np.ndarray]], path: str | Path,
                captions: dict[int, list[tuple[str, str]]] | None = None, note: str | None = None) -> Path:
    """rows: (label, images (n, C, H, W) in [0, 1]) drawn one above the other; captions: per row
    index, (text, colour) under each image of that row; note: a line above the figure."""
    n = max(len(imgs) for _, imgs in rows)
    gap = 0.25 if captions else 0.0
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, (1.1 + gap) * len(rows) + 0.4), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.axis("off")
            if i < len(imgs):
                img = np.moveaxis(imgs[i], 0, -1)
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(label, loc="left", fontsize=8)
    for r, row in (captions or {}).items():
        for i, (text, colour) in enumerate(row):
            axes[r, i].text(0.5, -0.06, text, transform=axes[r, i].transAxes, ha="center", va="top",
                            fontsize=6.5, color=colour)
    if note:
        fig.suptitle(note, fontsize=8)
    return save_figure(fig, path)


def reconstruction_grid(originals: np.ndarray, recons: np.ndarray, path: str | Path) -> Path:
    """originals, recons: (n, C, H, W) in [0, 1]; top row originals, bottom reconstructions."""
    return _image_rows([("original", originals), ("reconstruction", recons)], path)


def mistakes(images: np.ndarray, found: list[dict], path: str | Path, title: str, n: int = 12) -> Path:
    """A row per mistake of ``metrics.mistakes`` (most frequent first): up to ``n`` of its
    uint8 images (N, C, H, W), labelled with the true class, the class its cluster
    stands for and how many images it holds (at least one mistake)."""
    rows = [(f"{m['true']} taken for {m['as'] if m['as'] is not None else 'an unmatched cluster'}: "
             f"{m['n']} images", images[m["index"][:n]] / 255.0) for m in found]
    return _image_rows(rows, path, note=title)


def anomaly_extremes(images: np.ndarray, recons: np.ndarray, scores: np.ndarray, is_anomaly: np.ndarray,
                     path: str | Path, n: int = 10, classes: np.ndarray | None = None) -> Path:
    """The n most and n least anomalous test images (N, C, H, W) in [0, 1], each above its
    reconstruction and captioned with its score and true class (``classes`` (N,)); anomalies by
    the labels (``is_anomaly`` 1) captioned in red."""
    order = np.argsort(scores)
    top, bottom = order[::-1][:n], order[:n]
    rows = [("most anomalous", images[top]), ("its reconstruction", recons[top]),
            ("least anomalous", images[bottom]), ("its reconstruction", recons[bottom])]

    def caption(i: int) -> tuple[str, str]:
        cls = f" · {classes[i]}" if classes is not None else ""
        return f"{scores[i]:.3g}{cls}", "tab:red" if int(is_anomaly[i]) == 1 else "black"

    return _image_rows(rows, path, {1: [caption(i) for i in top], 3: [caption(i) for i in bottom]},
                       note="caption: anomaly score (higher = more anomalous) · true class; "
                            "red = an anomaly by the labels")


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


def roc_pr_curves(full: tuple[np.ndarray, np.ndarray], draws: list[tuple[np.ndarray, np.ndarray]],
                  path: str | Path, fraction: float | None = None) -> Path:
    """ROC (log false-positive-rate axis: the low rates are where a detector is used) and
    precision-recall. ``full``: (is_anomaly (N,) 0/1, scores (N,)) of the whole test split;
    ``draws``: the same for each unbalanced test draw, drawn as their mean with a band
    (min..max over the draws), the curves the reported metrics average over."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    fig, (roc, pr) = plt.subplots(1, 2, figsize=(12, 4.8))
    y, s = full
    fpr, tpr, _ = roc_curve(y, s)
    floor = 1.0 / max(1, int((np.asarray(y) == 0).sum()))  # one false positive
    grid = np.logspace(np.log10(floor), 0, 200)
    roc.plot(np.maximum(fpr, floor), tpr, color="C0",
             label=f"full test split ({np.mean(y):.0%} anomalies), AUROC {auc(fpr, tpr):.3f}")
    prec, rec, _ = precision_recall_curve(y, s)
    pr.plot(rec, prec, color="C0", label=f"full test split, AP {average_precision_score(y, s):.3f}")
    pr.axhline(np.mean(y), color="C0", ls=":", lw=1)
    if draws:
        rgrid = np.linspace(0, 1, 201)
        tprs, precs, aurocs, aps = [], [], [], []
        for yd, sd in draws:
            f, t, _ = roc_curve(yd, sd)
            tprs.append(np.interp(grid, f, t))
            aurocs.append(auc(f, t))
            p, r, _ = precision_recall_curve(yd, sd)
            # interpolated precision: the best precision at this recall or more
            r, p = r[::-1], np.maximum.accumulate(p)[::-1]
            precs.append(np.interp(rgrid, r, p))
            aps.append(average_precision_score(yd, sd))
        name = f"{len(draws)} unbalanced draws ({fraction:.0%} anomalies)" if fraction else f"{len(draws)} draws"
        for ax, xs, ys, score in ((roc, grid, np.array(tprs), f"AUROC {np.mean(aurocs):.3f}"),
                                  (pr, rgrid, np.array(precs), f"AP {np.mean(aps):.3f}")):
            ax.plot(xs, ys.mean(axis=0), color="C3", label=f"{name}: mean, {score}")
            ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), color="C3", alpha=0.2,
                            label="min..max over the draws")
        pr.axhline(np.mean([np.mean(yd) for yd, _ in draws]), color="C3", ls=":", lw=1)
    roc.plot(grid, grid, color="grey", ls="--", lw=1, label="chance")
    roc.set_xscale("log")
    roc.set_xlim(floor, 1)
    roc.set_xlabel("false-positive rate (normal images flagged), log scale")
    roc.set_ylabel("true-positive rate (anomalies found)")
    roc.set_title("ROC")
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_ylim(0, 1.02)
    pr.set_title("precision-recall (dotted: chance = anomaly share)")
    for ax in (roc, pr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is roc else "lower left")
    fig.tight_layout()
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
