"""Stage `anomaly_model`: the autoencoder config the anomaly branch trains, resolved."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from latentlab.config import task_model
from latentlab.files import write_text
from latentlab.stages.common import main


def anomaly_model(cfg: Mapping[str, Any], out: Path) -> str:
    """Write the anomaly branch's ``model`` section to ``out``: ``anomaly.model`` with the
    bottleneck ``anomaly.latent_dim`` pins (null: ``anomaly.model.latent_dim``). The branch's
    training reads its model from this file, and DVC its params: a ``model=...`` or
    ``model.latent_dim`` sweep for clustering leaves the file, and so the anomaly training, as they were."""
    model = task_model(cfg, "anomaly")
    write_text(out, yaml.safe_dump({"model": model}, sort_keys=False))
    arch = model["_target_"].rsplit(".", 1)[-1]
    return f"wrote {out}: {arch}, latent_dim {model['latent_dim']}"


if __name__ == "__main__":  # DVC: python -m latentlab.stages.anomaly_model --help
    main(anomaly_model)
