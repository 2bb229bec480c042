"""Stage `raw_selflabel`: the self-labelling baseline, a fresh network trained on the pixels' clusters."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import finetune as ft
from latentlab import metric_names as M
from latentlab.clustering import exact_neighbors, pixels
from latentlab.data import Prepared
from latentlab.files import save_npz
from latentlab.stages.common import main
from latentlab.stages.finetune import relabel, summary


def raw_selflabel(cfg: Mapping[str, Any], data: Path, baselines: Path, out: Path) -> str:
    """``raw_selflabel``, autoencoder_selflabel's raw twin: the same self-labelling
    recipe (``finetune``: rounds, epochs, fraction, optimiser, augmentation) on the
    ``raw_cluster`` baseline's clusters, by a network that never saw an autoencoder (a fresh
    CNN of ``finetune.channels`` for images, a fresh dense network for vectors). With a
    fraction below 1, reliability is judged by neighbours in the pixels' PCA, as the
    autoencoder method judges it by neighbours in its latent space."""
    from sklearn.decomposition import PCA

    f = cfg["finetune"]
    x_fit, _, x_test, _ = Prepared.load(data).split(cfg["protocol"])
    x_score = None if cfg["protocol"] == "all" else x_test
    with np.load(baselines) as b:
        score_labels = b[M.RAW_CLUSTER]
        fit_labels = score_labels if x_score is None else b[f"fit_{M.RAW_CLUSTER}"]
    k = int(fit_labels.max()) + 1
    neighbors = None
    if f["rounds"] > 0 and f["fraction"] < 1.0:
        flat = pixels(x_fit)
        pcs = min(cfg["baselines"]["pca_components"], *flat.shape)
        feats = PCA(pcs, random_state=cfg["seed"]).fit_transform(flat)
        neighbors = exact_neighbors(feats, min(f["neighbors"], len(feats) - 1) + 1)[0][:, 1:]
    net = ft.fresh_classifier(tuple(x_fit.shape[1:]), k, seed=cfg["seed"], channels=f["channels"])
    result = ft.self_label(net, x_fit, fit_labels, np.zeros(len(fit_labels), np.float32), neighbors=neighbors,
                           k=k, seed=cfg["seed"], trainer=cfg["trainer"], **ft.recipe(f))
    labels = relabel(result, x_score, score_labels)
    save_npz(out, **{M.RAW_SELFLABEL: labels})
    return f"wrote {out}: {summary(result, len(labels))}"


if __name__ == "__main__":  # DVC: python -m latentlab.stages.raw_selflabel --help
    main(raw_selflabel)
