"""``latentlab``: the whole pipeline under Hydra, one run or a sweep (``-m``), and ``compare``.

    latentlab model=conv model.latent_dim=16             # one run, outputs in runs/...
    latentlab -m model=mlp,conv model.latent_dim=2,10 seed=0,1,2
    latentlab -m hydra/launcher=joblib hydra.launcher.n_jobs=2 ...   # jobs in parallel
    latentlab compare --sweep latest                     # table and plots of a sweep
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from latentlab.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from latentlab.errors import LatentlabError
    from latentlab.sweep import job

    try:
        return job(cfg)
    except LatentlabError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the job as failed; the sweep goes on
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        from latentlab.compare import main as compare_main

        raise SystemExit(compare_main(sys.argv[2:]))
    _hydra_main()


if __name__ == "__main__":
    main()
