"""Stage `raw_dec`: deep embedded clustering of the pixels' PCA from their clusters, when dec.enabled."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import metric_names as M
from latentlab.data import Prepared
from latentlab.files import save_npz
from latentlab.stages.common import main
from latentlab.stages.dec import off, recipe, summary


def raw_dec(cfg: Mapping[str, Any], data: Path, baselines: Path, out: Path) -> str:
    """``raw_dec``, autoencoder_dec's raw twin: the same recipe (the ``dec`` section) from
    the ``raw_cluster`` baseline's clusters, in the space those were found in: an encoder
    that starts as the pixels' PCA of ``baselines.pca_components`` (a linear layer, trained
    as the autoencoder's encoder is, on the same augmented images). With no decoder there is
    no reconstruction term. With dec.enabled=false, an empty file."""
    if not cfg["dec"]["enabled"]:
        return off(out)
    # imported only when DEC runs: off, this stage is a process start-up in every dvc repro
    from sklearn.decomposition import PCA

    from latentlab import dec as deep
    from latentlab.clustering import pixels

    d = cfg["dec"]
    x_fit, _, x_test, _ = Prepared.load(data).split(cfg["protocol"])
    with np.load(baselines) as b:
        init = b[M.RAW_CLUSTER] if cfg["protocol"] == "all" else b[f"fit_{M.RAW_CLUSTER}"]
    flat = pixels(x_fit)
    pca = PCA(min(cfg["baselines"]["pca_components"], *flat.shape), random_state=cfg["seed"]).fit(flat)
    del flat
    result = deep.fit(deep.linear_encoder(pca), x_fit, init, seed=cfg["seed"], gamma=0.0, **recipe(d))
    labels = result.labels if cfg["protocol"] == "all" else result.predict(x_test)
    save_npz(out, **{M.RAW_DEC: labels})
    return f"wrote {out}: {summary(result)}"


if __name__ == "__main__":  # DVC: python -m latentlab.stages.raw_dec --help
    main(raw_dec)
