"""Stage `finetune`: the encoder in the loop, trained further on its own clusters, then every image relabelled."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import finetune as ft
from latentlab import metric_names as M
from latentlab import models
from latentlab.clustering import exact_neighbors
from latentlab.data import Prepared
from latentlab.files import save_npz
from latentlab.stages.common import by_protocol, main


def finetune(cfg: Mapping[str, Any], data: Path, model: Path, assignments: Path, latents: Path, out: Path,
             classifier_out: Path) -> str:
    """The ``autoencoder_selflabel`` method: the autoencoder's encoder + a linear head,
    trained with augmentation on the ``finetune.fraction`` of each of the cluster stage's
    clusters whose latent neighbours agree most, then every scored image relabelled by
    it (``finetune.rounds`` times, each round on the last one's labels). Nothing but the
    autoencoder and its clusters goes in. finetune.rounds=0: the cluster stage's assignments."""
    f = cfg["finetune"]
    x_fit, _, x_test, _ = Prepared.load(data).split(cfg["protocol"])
    x_score = None if cfg["protocol"] == "all" else x_test  # under `all` the fitted images are the scored ones
    with np.load(assignments) as a:
        fit_labels, fit_typical, score_labels = a["fit_labels"], a["fit_typicality"], a[M.AUTOENCODER]
        k = int(a["k"])  # the cluster stage's (cluster.select_k may have chosen it)
    neighbors = None
    if f["rounds"] > 0 and f["fraction"] < 1.0:  # with every member used, nothing is ranked
        with np.load(latents) as z:
            z_fit = by_protocol(cfg["protocol"], z["z_train"], z["z_test"])[0]
        neighbors = exact_neighbors(z_fit, min(f["neighbors"], len(z_fit) - 1) + 1)[0][:, 1:]
    ae = models.load(model)
    net = ft.encoder_classifier(ae, cfg["model"]["latent_dim"], k, seed=cfg["seed"], decoder=f["recon_weight"] > 0)
    result = ft.self_label(net, x_fit, fit_labels, fit_typical, neighbors=neighbors, k=k, seed=cfg["seed"],
                           trainer=cfg["trainer"], recon_weight=f["recon_weight"], **ft.recipe(f))
    labels = relabel(result, x_score, score_labels)
    ft.save(result, classifier_out, model=cfg["model"], input_shape=x_fit.shape[1:])
    save_npz(out, **{M.AUTOENCODER_SELFLABEL: labels})
    return f"wrote {out} and {classifier_out}: {summary(result, len(labels))}"


def relabel(result: ft.SelfLabelResult, x_score: np.ndarray | None, unchanged: np.ndarray) -> np.ndarray:
    """The scored points' labels: the classifier's on x_score (None: the fitted points,
    already relabelled), or ``unchanged`` when there is no classifier (rounds=0)."""
    if result.net is None:
        return unchanged
    if x_score is None:
        return result.labels
    return ft.predict_proba(result.net, x_score, **result.relabel).argmax(1).astype(np.int64)


def summary(result: ft.SelfLabelResult, n: int) -> str:
    if result.net is None:
        return f"finetune.rounds=0, the clustering's {n} assignments unchanged"
    return f"{n} assignments (" + "; ".join(
        f"round {r['round']}: {r['n_used']} samples, {r['epochs']} epochs, loss {r['loss']:.3f}, "
        f"{r['changed']} relabelled" for r in result.rounds) + ")"


if __name__ == "__main__":  # DVC: python -m latentlab.stages.finetune --help
    main(finetune)
