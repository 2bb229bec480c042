"""Stage `train`: fit the autoencoder on the samples the protocol fits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import history, tracking, training
from latentlab import metric_names as M
from latentlab.config import resolve_k, task_model
from latentlab.data import Prepared
from latentlab.errors import LatentlabError
from latentlab.stages.common import main


def fit_autoencoder(cfg: Mapping[str, Any], x: np.ndarray, model: Mapping[str, Any], model_out: Path,
                    history_out: Path, max_epochs: int, what: str = "images",
                    augment: Mapping[str, Any] | None = None, min_steps: int = 0) -> str:
    """Train the autoencoder ``model`` describes on ``x``; write its checkpoint and per-epoch losses."""
    tracking.check_server()  # the run is logged at the end: an unreachable server fails now, not then
    t = cfg["train"]
    result = training.fit(x, model=dict(model), optimizer=cfg["optimizer"], trainer=cfg["trainer"],
                          batch_size=t["batch_size"], max_epochs=max_epochs, min_steps=min_steps,
                          val_fraction=t["val_fraction"], patience=t["patience"],
                          min_delta=t["min_delta"], lr_schedule=t["lr_schedule"], augment=augment,
                          budget_max_epochs=t["budget_max_epochs"], seed=cfg["seed"], workdir=model_out.parent,
                          # Beside the outputs, never one of them: a killed run resumes from here.
                          resume_dir=model_out.parent / ".resume")
    training.save(result, model_out)
    history.write(result.history, history_out)
    procs = f" in {result.world_size} processes" if result.world_size > 1 else ""
    stall = (f"; STALLED: no better than outputting the mean sample ({result.mean_val_loss:.5f}), check the "
             "learning rate and the latent size" if result.stalled else "")
    return (f"wrote {model_out} and {history_out}: {len(result.history)} epochs on {len(x)} {what}{procs}, "
            f"best {M.VAL_LOSS} {result.best_val_loss:.5f} at epoch {result.best_epoch}{stall}")


def train(cfg: Mapping[str, Any], data: Path, model_out: Path, history_out: Path) -> str:
    """Fit the autoencoder on the fitted samples (augmented: a clustering aid)."""
    x_fit, y_fit, _, _ = Prepared.load(data).split(cfg["protocol"])
    k, _, why = resolve_k(cfg["cluster"], y_fit)  # a k the data cannot have is said now, not after training
    print(f"  clustering into {why}", flush=True)
    if len(x_fit) < (k or cfg["cluster"]["k_range"][0]):
        raise LatentlabError(f"{why}, but there are only {len(x_fit)} samples to cluster")
    return fit_autoencoder(cfg, x_fit, task_model(cfg, "cluster"), model_out, history_out, cfg["train"]["max_epochs"],
                           "images" if x_fit.ndim == 4 else "feature vectors", augment=cfg["train"]["augment"],
                           min_steps=cfg["train"]["min_steps"])


if __name__ == "__main__":  # DVC: python -m latentlab.stages.train --help
    main(train)
