"""Stage `raw_dec`: deep embedded clustering by a fresh network from the pixels' clusters, when dec.enabled."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import dec as deep
from latentlab import finetune as ft
from latentlab import metric_names as M
from latentlab.data import Prepared
from latentlab.files import save_npz
from latentlab.stages.common import main
from latentlab.stages.dec import recipe, summary


def raw_dec(cfg: Mapping[str, Any], data: Path, baselines: Path, out: Path) -> str:
    """``raw_dec``, autoencoder_dec's raw twin: the same recipe (the ``dec`` section) from
    the ``raw_cluster`` baseline's clusters, by a network that never saw an autoencoder (the
    raw self-labelling twin's fresh CNN of ``finetune.channels``, or dense network for
    vectors; its k outputs are the code). With no decoder there is no reconstruction term.
    With dec.enabled=false, an empty file."""
    d = cfg["dec"]
    if not d["enabled"]:
        save_npz(out)
        return f"dec.enabled=false: wrote {out} with no assignments"
    x_fit, _, x_test, _ = Prepared.load(data).split(cfg["protocol"])
    with np.load(baselines) as b:
        init = b[M.RAW_CLUSTER] if cfg["protocol"] == "all" else b[f"fit_{M.RAW_CLUSTER}"]
    k = int(init.max()) + 1
    net = ft.fresh_classifier(tuple(x_fit.shape[1:]), k, seed=cfg["seed"], channels=cfg["finetune"]["channels"])
    result = deep.fit(net, x_fit, init, seed=cfg["seed"], gamma=0.0, **recipe(d))
    labels = result.labels if cfg["protocol"] == "all" else result.predict(x_test)
    save_npz(out, **{M.RAW_DEC: labels})
    return f"wrote {out}: {summary(result)}"


if __name__ == "__main__":  # DVC: python -m latentlab.stages.raw_dec --help
    main(raw_dec)
