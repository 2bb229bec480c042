"""Clustering of latents and the raw-pixel baselines, as scikit-learn pipelines.

Inputs are float arrays of shape (N, D); outputs are int cluster ids of shape (N,).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from latentlab.errors import ConfigError


def make_pipeline(*, k: int, n_init: int, max_iter: int, seed: int, standardize: bool = False,
                  pca: int | float | None = None) -> Pipeline:
    """Optional z-scoring, optional PCA (components, or explained-variance fraction), k-means."""
    return Pipeline([
        ("scale", StandardScaler() if standardize else "passthrough"),
        ("pca", PCA(n_components=pca, random_state=seed) if pca is not None else "passthrough"),
        ("kmeans", KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed)),
    ])


def fit_predict(x_fit: np.ndarray, x_score: np.ndarray, name: str, **params) -> tuple[np.ndarray, Pipeline]:
    """Fit on x_fit (N, D), assign x_score (M, D); prints a progress line with timing."""
    k = params["k"]
    if len(x_fit) < k:
        raise ConfigError(f"cluster.k={k} is larger than the {len(x_fit)} samples to cluster")
    pca = params.get("pca")
    if isinstance(pca, int) and pca > min(x_fit.shape):
        raise ConfigError(f"PCA components {pca} for {name} exceed the data's dimension "
                          f"{x_fit.shape[1]} (or sample count {x_fit.shape[0]})")
    print(f"  {name}: clustering {x_fit.shape[0]}x{x_fit.shape[1]} into k={k} "
          f"(n_init={params['n_init']}, pca={pca}) ...", flush=True)
    t = time.perf_counter()
    pipe = make_pipeline(**params).fit(x_fit)
    labels = pipe.predict(x_score) if x_score is not x_fit else pipe.named_steps["kmeans"].labels_
    print(f"  {name}: done in {time.perf_counter() - t:.1f}s "
          f"({pipe.named_steps['kmeans'].n_iter_} k-means iterations)", flush=True)
    return labels.astype(np.int64), pipe


def pixels(x: np.ndarray) -> np.ndarray:
    """uint8 images (N, C, H, W) -> float32 (N, C*H*W) in [0, 1]."""
    return x.reshape(len(x), -1).astype(np.float32) / 255.0
