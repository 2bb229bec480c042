"""Stage `embed`: encode both splits; store latents and per-sample reconstruction MSE."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from latentlab import models
from latentlab.data import Prepared
from latentlab.files import save_npz
from latentlab.stages.common import main


def embed(cfg: Mapping[str, Any], data: Path, model: Path, out: Path) -> str:
    """Encode the train and test samples with the trained autoencoder; write their latents
    and per-sample reconstruction MSE to ``out``."""
    ds = Prepared.load(data)
    net = models.load(model)
    z_train, mse_train = models.encode(net, ds.x_train, desc="encoding train")
    z_test, mse_test = models.encode(net, ds.x_test, desc="encoding test")
    save_npz(out, z_train=z_train, mse_train=mse_train, z_test=z_test, mse_test=mse_test)
    return (f"wrote {out}: latents {z_train.shape[1]}-d for {len(z_train)} + {len(z_test)} samples, "
            f"mean reconstruction MSE train {mse_train.mean():.5f} / test {mse_test.mean():.5f}")


if __name__ == "__main__":  # DVC: python -m latentlab.stages.embed --help
    main(embed)
