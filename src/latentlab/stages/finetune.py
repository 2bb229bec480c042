"""Stage `finetune`: self-labelling, a classifier trained on cluster ids, then every image relabelled."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors

from latentlab import finetune as ft
from latentlab import metric_names as M
from latentlab import models
from latentlab.data import Prepared
from latentlab.errors import LatentlabError
from latentlab.files import save_npz
from latentlab.stages.common import by_protocol, main


def finetune(cfg: Mapping[str, Any], data: Path, model: Path, assignments: Path, latents: Path, out: Path,
             classifier_out: Path, baselines: Path | None = None) -> str:
    """The finetuned method: a classifier (the encoder + a head, or a fresh CNN) trained on
    the cluster stage's most reliable assignments of the fitted images (judged by their
    latent neighbours; under finetune.labels=consensus only where the pixels' UMAP
    baseline in ``baselines`` agrees; under vote every image, its label split between the
    two where they disagree; under pixels, the default, the pixels' UMAP baseline alone), then
    every scored image relabelled by it. finetune.rounds=0: the cluster stage's assignments."""
    f = cfg["finetune"]
    fitted_are_scored = cfg["protocol"] == "all"
    x_fit, _, x_score, _ = Prepared.load(data).split(cfg["protocol"])
    with np.load(assignments) as a:
        fit_labels, fit_typical, score_labels = a["fit_labels"], a["fit_typicality"], a[M.AUTOENCODER]
        k = int(a["k"]) if "k" in a.files else cfg["cluster"]["k"]  # cluster.select_k may have chosen it
    neighbors = None
    if f["rounds"] > 0 and f["fraction"] < 1.0:  # with every member used, nothing is ranked
        with np.load(latents) as z:
            z_fit = by_protocol(cfg["protocol"], z["z_train"], z["z_test"])[0]
        n = min(f["neighbors"], len(z_fit) - 1)
        neighbors = NearestNeighbors(n_neighbors=n + 1).fit(z_fit).kneighbors(z_fit, return_distance=False)[:, 1:]
    candidates = soft = agree = None
    if f["rounds"] > 0 and f["labels"] in ("consensus", "vote", "pixels"):
        if baselines is None:
            raise LatentlabError(f"finetune.labels={f['labels']} needs the baselines stage's assignments (--baselines)")
        with np.load(baselines) as b:
            pixel_labels = b[M.RAW_UMAP if fitted_are_scored else f"fit_{M.RAW_UMAP}"]
        if f["labels"] == "consensus":
            candidates = agree = ft.consensus(fit_labels, pixel_labels)
        elif f["labels"] == "vote":  # every image, hard where the two agree, half-and-half where not
            soft = ft.vote(fit_labels, pixel_labels, k)
            agree = soft.max(1) == 1.0
        else:  # the pixel twin: no autoencoder in the labels at all
            fit_labels, fit_typical, neighbors = pixel_labels, np.zeros(len(pixel_labels), np.float32), None
            k = int(pixel_labels.max()) + 1
    ae = models.load(model)
    result = ft.self_label(ae, x_fit, fit_labels, fit_typical, neighbors=neighbors, k=k,
                           rounds=f["rounds"], epochs=f["epochs"], fraction=f["fraction"], lr=f["lr"],
                           batch_size=f["batch_size"], augment=f["augment"], seed=cfg["seed"],
                           trainer=cfg["trainer"], latent_dim=cfg["model"]["latent_dim"],
                           classifier=f["classifier"], candidates=candidates,
                           label_smoothing=f["label_smoothing"], lr_schedule=f["lr_schedule"],
                           min_steps=f["min_steps"], soft=soft, channels=f["channels"])
    if result.net is None:
        labels = score_labels
    elif fitted_are_scored:
        labels = result.labels
    else:
        labels = ft.predict_proba(result.net, x_score).argmax(1).astype(np.int64)
    ft.save(result, ae_model=model, path=classifier_out)
    save_npz(out, **{M.FINETUNED: labels})
    if result.net is None:
        return f"wrote {out}: finetune.rounds=0, the cluster stage's {len(labels)} assignments unchanged"
    agreed = "" if agree is None else f"AE and pixel clusters agree on {agree.mean():.1%}; "
    rounds = agreed + "; ".join(f"round {r['round']}: {r['n_used']} samples, {r['epochs']} epochs, "
                                f"loss {r['loss']:.3f}, {r['changed']} relabelled" for r in result.rounds)
    return f"wrote {out} and {classifier_out}: {len(labels)} assignments ({rounds})"


if __name__ == "__main__":  # DVC: python -m latentlab.stages.finetune --help
    main(finetune)
