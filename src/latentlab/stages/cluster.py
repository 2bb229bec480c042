"""Stage `cluster`: the autoencoder method, the latents through the configured clusterer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import metric_names as M
from latentlab.clustering import assign, fit_predict, pipeline_params
from latentlab.config import resolve_k
from latentlab.data import Prepared
from latentlab.files import save_npz
from latentlab.stages.common import by_protocol, main


def cluster(cfg: Mapping[str, Any], data: Path, latents: Path, out: Path) -> str:
    """The autoencoder methods: the latents through the configured pipeline
    (standardise, PCA, UMAP: each optional, then k-means or a Gaussian mixture), and
    through k-means alone (``autoencoder_kmeans``, raw_kmeans' twin: the classic AE + k-means).

    Also writes the fitted points' assignments (under the train_test protocol they are
    not the scored ones) and how central each is to its cluster: the finetune stage
    learns from those.
    """
    with np.load(latents) as z:
        z_fit, z_score = by_protocol(cfg["protocol"], z["z_train"], z["z_test"])
    _, y_fit, _, _ = Prepared.load(data).split(cfg["protocol"])
    k, select_k, why = resolve_k(cfg["cluster"], y_fit)
    print(f"  {why}", flush=True)
    c = pipeline_params(cfg["cluster"], cfg["seed"], k=k, select_k=select_k)
    kmeans = fit_predict(z_fit, z_score, M.AUTOENCODER_KMEANS,
                         **{**c, "standardize": False, "pca": None, "manifold": "none", "algorithm": "kmeans"})
    labels, typical, pipe, k_scores = fit_predict(z_fit, z_score, M.AUTOENCODER, **c)
    fit_labels, fit_typical = (labels, typical) if z_score is None else assign(pipe, z_fit)
    k = pipe[-1].n_components if hasattr(pipe[-1], "n_components") else pipe[-1].n_clusters
    save_npz(out, **{M.AUTOENCODER: labels, M.AUTOENCODER_KMEANS: kmeans.labels, "fit_labels": fit_labels, "fit_typicality": fit_typical,
                     "k": np.array(k)})
    chosen = f" (chosen by {select_k})" if k_scores else (" (the label count)" if cfg["cluster"]["k"] is None
                                                                    else "")
    return f"wrote {out}: {len(labels)} assignments to {k} clusters{chosen}"


if __name__ == "__main__":  # DVC: python -m latentlab.stages.cluster --help
    main(cluster)
