"""Networks give the right shapes; a saved model reloads to the same function."""

import numpy as np
import pytest
import torch

from latentlab import models, training
from latentlab.models import ConvAutoencoder, MLPAutoencoder


MLP = {"_target_": "latentlab.models.MLPAutoencoder", "activation": "relu", "input_dropout": 0.2}


@pytest.mark.parametrize("cls, kw", [(MLPAutoencoder, {"hidden": (64, 32)}),
                                     (ConvAutoencoder, {"channels": (8, 16, 32)}),
                                     (ConvAutoencoder, {"channels": (8, 16), "decoder_hidden": (40,),
                                                        "input_dropout": 0.2})])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_shapes(cls, kw, shape):
    net = cls(input_shape=shape, latent_dim=5, **kw)
    x = torch.rand(4, *shape)
    z = net.encode(x)
    assert z.shape == (4, 5)
    r = net(x)
    assert r.shape == x.shape and 0 <= r.min() and r.max() <= 1


def test_fit_save_load_encode_round_trip(tmp_path, tiny_cfg):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(300, 1, 8, 8), dtype=np.uint8)
    t = tiny_cfg["train"]
    model = {**MLP, "hidden": [32, 16], "latent_dim": 3}
    result = training.fit(x, model=model, optimizer=tiny_cfg["optimizer"], trainer=tiny_cfg["trainer"],
                          batch_size=64, max_epochs=2, val_fraction=0.2, patience=2,
                          min_delta=t["min_delta"], seed=0, workdir=tmp_path)
    assert len(result.history) == 2
    assert result.best_val_loss == min(r["val/recon_loss"] for r in result.history)
    training.save(result, tmp_path / "model.pt")
    back = models.load(tmp_path / "model.pt")
    z1, e1 = models.encode(result.net, x)
    z2, e2 = models.encode(back, x)
    assert z1.shape == (300, 3) and e1.shape == (300,)
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_array_equal(e1, e2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # checkpoints cleaned up


def _epochs(tmp_path, tiny_cfg, max_epochs, min_steps, patience=100, lr=None):
    """Epochs trained on 100 random 8x8 images: 80 training images in batches of 32, 3 steps an epoch."""
    x = np.random.default_rng(1).integers(0, 256, size=(100, 1, 8, 8), dtype=np.uint8)
    model = {**MLP, "hidden": [16], "latent_dim": 2}
    optimizer = {**tiny_cfg["optimizer"], **({} if lr is None else {"lr": lr})}
    return len(training.fit(x, model=model, optimizer=optimizer, trainer=tiny_cfg["trainer"],
                            batch_size=32, max_epochs=max_epochs, val_fraction=0.2, patience=patience,
                            min_delta=0.0, seed=0, workdir=tmp_path, min_steps=min_steps).history)


def test_a_small_dataset_trains_for_min_steps(tmp_path, tiny_cfg):
    assert _epochs(tmp_path, tiny_cfg, 1, 7) == 3   # ceil(7 / 3)
    assert _epochs(tmp_path, tiny_cfg, 4, 7) == 4   # max_epochs is the more
    assert _epochs(tmp_path, tiny_cfg, 2, 0) == 2


def test_early_stopping_waits_for_min_steps(tmp_path, tiny_cfg):
    # at lr 0 the validation loss never improves on the first epoch's: patience 1 stops after 2 epochs
    assert _epochs(tmp_path, tiny_cfg, 8, 0, patience=1, lr=0.0) == 2
    # ... but not before min_steps' epochs (10 steps: 4 epochs), and max_epochs still ends it
    assert _epochs(tmp_path, tiny_cfg, 8, 10, patience=1, lr=0.0) == 4
    assert _epochs(tmp_path, tiny_cfg, 3, 30, patience=1, lr=0.0) == 10


def test_training_is_deterministic(tmp_path, tiny_cfg):
    x = np.random.default_rng(1).integers(0, 256, size=(200, 1, 8, 8), dtype=np.uint8)
    model = {**MLP, "hidden": [16], "latent_dim": 2}
    runs = [training.fit(x, model=model, optimizer=tiny_cfg["optimizer"], trainer=tiny_cfg["trainer"],
                         batch_size=50, max_epochs=2, val_fraction=0.2, patience=2, min_delta=0.0,
                         seed=3, workdir=tmp_path).history for _ in range(2)]
    assert runs[0] == runs[1]


def test_random_affine_moves_each_image_independently():
    from latentlab.models import random_affine

    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 12:16, 12:16] = 1.0  # a centred square
    torch.manual_seed(0)
    assert torch.allclose(random_affine(x, 0.0, 0.0), x, atol=1e-6)  # no-op settings change nothing
    out = random_affine(x, 15.0, 0.1)
    cols = torch.arange(28.0)
    cx = (out.sum(dim=(1, 2)) * cols).sum(1) / out.sum(dim=(1, 2, 3))  # centre of mass, x
    assert out.shape == x.shape
    assert (cx - 13.5).abs().max() <= 0.1 * 28 + 0.5       # shifted by at most 10% of the width
    assert cx.std() > 0.5                                   # and not the same shift for the whole batch


def test_augmented_training_runs_and_is_deterministic(tmp_path, tiny_cfg):
    x = np.random.default_rng(1).integers(0, 256, size=(200, 1, 8, 8), dtype=np.uint8)
    model = {**MLP, "hidden": [16], "latent_dim": 2}
    runs = [training.fit(x, model=model, optimizer=tiny_cfg["optimizer"], trainer=tiny_cfg["trainer"],
                         batch_size=50, max_epochs=2, val_fraction=0.2, patience=2, min_delta=0.0,
                         augment={"degrees": 10.0, "translate": 0.1}, seed=3, workdir=tmp_path).history
            for _ in range(2)]
    plain = training.fit(x, model=model, optimizer=tiny_cfg["optimizer"], trainer=tiny_cfg["trainer"],
                         batch_size=50, max_epochs=2, val_fraction=0.2, patience=2, min_delta=0.0,
                         seed=3, workdir=tmp_path).history
    assert runs[0] == runs[1] and runs[0] != plain


@pytest.mark.parametrize("arch, target, reconstructs", [
    ("mlp", "augmented", "augmented"), ("mlp", "original", "original"), ("mlp", "auto", "augmented"),
    ("conv", "auto", "original"), ("conv", "augmented", "augmented")])
def test_augmented_training_reconstructs_the_chosen_target(arch, target, reconstructs, tiny_cfg):
    """target=original: the loss compares the reconstruction of the shifted copy with the
    image as it was; target=augmented: with the shifted copy itself; auto: the original
    for a conv autoencoder, the shifted copy for the MLP."""
    from latentlab.models import random_affine

    model = ({**MLP, "hidden": [16], "latent_dim": 2} if arch == "mlp" else
             {"_target_": "latentlab.models.ConvAutoencoder", "latent_dim": 2, "channels": [4]})
    aug = {"degrees": 20.0, "translate": 0.2, "target": target}
    lit = training.LitAutoencoder(model, tiny_cfg["optimizer"], (1, 8, 8), augment=aug)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(32, 1, 8, 8), dtype=np.uint8))
    lit.log = lambda *a, **k: None  # outside a Trainer
    torch.manual_seed(0)
    loss = lit._step((x,), "train")
    torch.manual_seed(0)
    seen = random_affine(models.to_float(x), 20.0, 0.2)
    with torch.no_grad():
        recon = lit.net(seen)
    want = seen if reconstructs == "augmented" else models.to_float(x)
    other = models.to_float(x) if reconstructs == "augmented" else seen
    assert torch.allclose(loss, torch.nn.functional.mse_loss(recon, want))
    assert not torch.allclose(loss, torch.nn.functional.mse_loss(recon, other))
    lit.eval()  # no dropout: validation never augments
    assert torch.allclose(lit._step((x,), "val"), torch.nn.functional.mse_loss(lit.net(models.to_float(x)),
                                                                              models.to_float(x)))


def test_a_checkpoint_naming_a_foreign_class_is_refused_before_anything_runs(tmp_path):
    """weights_only stops pickled code; the hyperparameters' `_target_` must not be a way around it."""
    from latentlab.errors import ConfigError

    marker = tmp_path / "pwned"
    evil = {"hyper_parameters": {"model": {"_target_": "os.system", "command": f"touch {marker}"},
                                 "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
                                 "input_shape": [1, 28, 28]}, "state_dict": {}}
    torch.save(evil, tmp_path / "model.pt")
    with pytest.raises(ConfigError, match="model._target_ must be one of .* got 'os.system'"):
        models.load(tmp_path / "model.pt")
    assert not marker.exists()
