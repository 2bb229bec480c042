"""Stage `anomaly_train`: the anomaly branch's autoencoder, fitted on normal samples only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from latentlab import history
from latentlab.anomaly import plan_for, split_for, write_skipped
from latentlab.config import sample_noun
from latentlab.data import Prepared
from latentlab.errors import TooLittleData
from latentlab.stages.common import main


def anomaly_train(cfg: Mapping[str, Any], data: Path, model_config: Path, model_out: Path, history_out: Path) -> str:
    """Fit the autoencoder ``model_config`` describes (the anomaly_model stage's file) on the
    protocol's normal training samples only (not augmented: augmentation is a clustering aid)."""
    ds = Prepared.load(data)
    try:
        split = split_for(cfg["anomaly"], cfg["seed"], ds)
    except TooLittleData as err:
        write_skipped(model_out, str(err))
        history.write([], history_out)
        return f"anomaly branch skipped: {err}"
    from latentlab.stages.train import fit_autoencoder  # Lightning: seconds to import, not needed to skip

    model = yaml.safe_load(model_config.read_text())["model"]
    leak = f", {split.n_contaminated} of them anomalies" if split.n_contaminated else ""
    what = sample_noun(ds.meta.get("dataset", ""), ds.is_images)
    print(f"  {plan_for(cfg['anomaly'], ds).why}", flush=True)
    normal = f"classes {split.normal_classes}" if split.normal_classes else "no labels"
    return fit_autoencoder(cfg, split.x_fit, model, model_out, history_out, cfg["anomaly"]["max_epochs"],
                           f"normal {what} ({normal}{leak})", min_steps=cfg["anomaly"]["min_steps"])


if __name__ == "__main__":  # DVC: python -m latentlab.stages.anomaly_train --help
    main(anomaly_train)
