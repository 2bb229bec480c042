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


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """acc, nmi, ari and purity of one clustering."""
    y_true, y_pred = _check(y_true, y_pred)
    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "purity": purity(y_true, y_pred),
    }
