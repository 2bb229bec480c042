"""Stage `dec`: deep embedded clustering of the autoencoder's code (autoencoder_dec), when dec.enabled."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import metric_names as M
from latentlab.data import Prepared
from latentlab.files import save_npz
from latentlab.stages.common import main


def dec(cfg: Mapping[str, Any], data: Path, model: Path, assignments: Path, out: Path, model_out: Path) -> str:
    """The ``autoencoder_dec`` method: the autoencoder's encoder, decoder and a centre per
    cluster of the cluster stage trained together (DCEC with DEC-DA's augmentation, the
    ``dec`` section), then every scored point given its nearest centre; ``model_out`` holds
    the trained autoencoder and centres (``latentlab predict`` with export.method=autoencoder_dec).
    With dec.enabled=false, an empty file and a model file that says so: evaluate then scores
    no autoencoder_dec."""
    from latentlab import dec as deep  # torch: imported by the stage, not by raw_dec's use of off / recipe
    from latentlab import models

    if not cfg["dec"]["enabled"]:
        deep.save(model_out, None)
        return off(out)
    d = cfg["dec"]
    x_fit, _, x_test, _ = Prepared.load(data).split(cfg["protocol"])
    with np.load(assignments) as a:
        init = a["fit_labels"]
    ckpt = models.read_checkpoint(model)
    ae = models.from_checkpoint(ckpt)
    result = deep.fit(ae.encoder, x_fit, init, decoder=ae.decoder, seed=cfg["seed"], **recipe(d), gamma=d["gamma"])
    labels = result.labels if cfg["protocol"] == "all" else result.predict(x_test)
    deep.save(model_out, result, ckpt["hyper_parameters"], ae)
    save_npz(out, **{M.AUTOENCODER_DEC: labels})
    return f"wrote {out} and {model_out}: {summary(result)}"


def off(out: Path) -> str:
    """dec.enabled=false: an empty file, so that evaluate scores neither DEC method."""
    save_npz(out)
    return f"dec.enabled=false: wrote {out} with no assignments"


def recipe(d: Mapping[str, Any]) -> dict[str, Any]:
    """``dec.fit``'s arguments that the autoencoder method and its raw twin share (the
    twin has no decoder: no gamma)."""
    return {key: d[key] for key in ("steps", "update", "tol", "lr", "batch_size", "augment")}


def summary(result: Any) -> str:
    """A line about a ``dec.DECResult``."""
    last = result.history[-1]["changed"] if result.history else float("nan")
    return (f"{len(result.labels)} fitted points, {result.steps} steps, {len(result.history)} target updates, "
            f"{last:.2%} of the labels changed at the last")


if __name__ == "__main__":  # DVC: python -m latentlab.stages.dec --help
    main(dec)
