"""Lightning DDP on CPU: two `ddp_spawn` processes (gloo) train as well as one."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from latentlab import metric_names as M
from latentlab import training
from latentlab.models import per_sample_mse
from latentlab.config import compose
from latentlab.data import prepare


pytestmark = pytest.mark.e2e  # two training processes


@pytest.fixture(scope="module")
def images(mirror):
    return prepare("mnist", mirror=str(mirror), cache=None, max_train=4000, max_test=10,
                   test_fraction=0.1, seed=0).x_train


def _fit(images, tmp_path, trainer: str, batch_size: int):
    cfg = OmegaConf.to_container(compose([f"trainer={trainer}", "trainer.accelerator=cpu",
                                          "trainer.enable_progress_bar=false"]), resolve=True)
    return training.fit(images, model=cfg["model"], optimizer=cfg["optimizer"], trainer=cfg["trainer"],
                        batch_size=batch_size, max_epochs=3, val_fraction=0.1, patience=5, min_delta=0.0,
                        seed=0, lr_schedule="cosine", workdir=tmp_path / trainer)


def test_two_process_ddp_matches_one_process(images, tmp_path):
    one = _fit(images, tmp_path, "default", batch_size=128)
    # per-process batch 64 x 2 processes: the same global batch and steps as one process
    two = _fit(images, tmp_path, "ddp", batch_size=64)
    assert (one.world_size, two.world_size) == (1, 2)
    assert [r["epoch"] for r in two.history] == [0, 1, 2]
    # training happened in the children and came back: loss fell, and the weights are the best epoch's
    assert two.history[-1][M.VAL_LOSS] < 0.8 * two.history[0][M.VAL_LOSS]
    assert two.best_val_loss == pytest.approx(min(r[M.VAL_LOSS] for r in two.history))
    assert two.best_val_loss == pytest.approx(one.best_val_loss, rel=0.15)
    # the returned network is the trained one, not the initial weights
    import torch

    x = torch.from_numpy(images[:256]).float() / 255
    with torch.inference_mode():
        err = per_sample_mse(x, two.net(x)).mean().item()
    assert err == pytest.approx(two.best_val_loss, rel=0.25)
