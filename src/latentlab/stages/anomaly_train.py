"""Stage `anomaly_train`: the anomaly branch's autoencoder, fitted on normal samples only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from latentlab.anomaly import split_for
from latentlab.data import Prepared
from latentlab.stages.train import fit_autoencoder
from latentlab.stages.common import main


def anomaly_train(cfg: Mapping[str, Any], data: Path, model_config: Path, model_out: Path, history_out: Path) -> str:
    """Fit the autoencoder ``model_config`` describes (the anomaly_model stage's file) on the
    protocol's normal training samples only (not augmented: augmentation is a clustering aid)."""
    ds = Prepared.load(data)
    split = split_for(cfg["anomaly"], cfg["seed"], ds)
    model = yaml.safe_load(model_config.read_text())["model"]
    leak = f", {split.n_contaminated} of them anomalies" if split.n_contaminated else ""
    what = "images" if ds.is_images else "feature vectors"
    normal = f"classes {split.normal_classes}" if split.normal_classes else "no labels"
    return fit_autoencoder(cfg, split.x_fit, model, model_out, history_out, cfg["anomaly"]["max_epochs"],
                           f"normal {what} ({normal}{leak})")


if __name__ == "__main__":  # DVC: python -m latentlab.stages.anomaly_train --help
    main(anomaly_train)
