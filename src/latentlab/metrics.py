"""Clustering scores against true labels. Labels are used only here, never to fit.

All functions take two int arrays of shape (N,): true labels and cluster ids. The
two need not share a vocabulary (cluster 3 may be digit 7).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def _check(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"expected two non-empty 1-D label arrays of equal length, got shapes "
                         f"{y_true.shape} and {y_pred.shape}")
    return y_true, y_pred


def contingency(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(n_classes, n_clusters) counts: row = true label, column = cluster."""
    return contingency_matrix(*_check(y_true, y_pred))


def purity(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of samples whose cluster's majority label is their own label."""
    c = contingency(y_true, y_pred)
    return float(c.max(axis=0).sum() / c.sum())


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of clusters to labels (Hungarian)."""
    c = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum() / c.sum())


def match(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The cluster ids renamed to the labels ``cluster_accuracy`` matches them to, one-to-one
    (Hungarian, on the contingency table), (N,) int; -1 for a cluster no label is matched to
    (more clusters than labels)."""
    y_true, y_pred = _check(y_true, y_pred)
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, p = np.unique(y_pred, return_inverse=True)
    rows, cols = linear_sum_assignment(contingency_matrix(t, p), maximize=True)
    to_class = np.full(len(clusters), -1, dtype=np.int64)
    to_class[cols] = classes[rows]
    return to_class[p]


def mistakes(y_true: np.ndarray, y_pred: np.ndarray, top: int = 4) -> list[dict]:
    """The ``top`` most frequent mistakes under ``match``, most first: each the true label
    (``true``), the label its cluster is matched to (``as``; None for a cluster no label is
    matched to), how many samples (``n``) and which ((n,) ``index``). A clustering's accuracy
    hides whether its errors are noise or one style of a class put with another; this says which."""
    y_true, y_pred = _check(y_true, y_pred)
    as_class = match(y_true, y_pred)
    wrong = as_class != y_true
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([y_true[wrong], as_class[wrong]], 1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:top]  # most first; ties by true, then by as
    return [{"true": pairs[o, 0].item(), "as": None if pairs[o, 1] == -1 else pairs[o, 1].item(),
             "n": int(counts[o]), "index": np.flatnonzero(wrong & (y_true == pairs[o, 0]) & (as_class == pairs[o, 1]))}
            for o in order]


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """acc, nmi, ari and purity of one clustering."""
    y_true, y_pred = _check(y_true, y_pred)
    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "purity": purity(y_true, y_pred),
    }


LABEL_FREE = ("silhouette", "davies_bouldin", "calinski_harabasz")


def common_space(x: np.ndarray, *, seed: int = 0, dims: int = 50) -> np.ndarray:
    """The space label-free scores are judged in: a seeded PCA (at most ``dims`` components)
    of the raw inputs (N, ...) flattened, uint8 images scaled to [0, 1]. It depends on the
    data alone, so runs with different autoencoders (latent sizes, architectures) and
    every method of a run are scored in the same space and compare."""
    from sklearn.decomposition import PCA

    flat = x.reshape(len(x), -1).astype(np.float32)
    if x.dtype == np.uint8:
        flat /= 255.0
    n = min(dims, flat.shape[1], len(flat))
    return PCA(n_components=n, random_state=seed).fit_transform(flat) if n < flat.shape[1] else flat


def label_free(x: np.ndarray, clusters: np.ndarray, *, seed: int = 0, sample: int = 10_000) -> dict[str, float]:
    """Cluster quality without labels, in the space x (N, D) the clusters are judged in.

    silhouette (in [-1, 1], higher is better) on a seeded sample of at most ``sample``
    points (it costs O(n^2)); Davies-Bouldin (>= 0, lower is better) and
    Calinski-Harabasz (higher is better) on all of them. NaN for a single cluster.
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    x, clusters = np.asarray(x), np.asarray(clusters)
    if len(x) != len(clusters):
        raise ValueError(f"{len(x)} points but {len(clusters)} cluster ids")
    n_clusters = len(np.unique(clusters))
    if n_clusters < 2 or n_clusters >= len(x):
        return {k: float("nan") for k in LABEL_FREE}
    return {
        "silhouette": float(silhouette_score(x, clusters, sample_size=min(sample, len(x)), random_state=seed)),
        "davies_bouldin": float(davies_bouldin_score(x, clusters)),
        "calinski_harabasz": float(calinski_harabasz_score(x, clusters)),
    }
