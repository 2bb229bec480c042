"""Deep embedded clustering (`autoencoder_dec`, its twin `raw_dec`): the mechanism on data whose
answer is known, and its settings' validation. The stages on the small real run are in
test_stages.py (beside the other tests of that session fixture: one pytest worker builds it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import with_value
from latentlab import dec as deep
from latentlab.config import validate
from latentlab.errors import ConfigError
from latentlab.metrics import scores

RECIPE = {"update": 20, "tol": 0.0, "lr": 0.01, "batch_size": 64, "augment": {"degrees": 0.0, "translate": 0.0}}


def blobs(n_per: int = 200, k: int = 4, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated Gaussian clusters in d dimensions, (k * n_per, d) float32, and their ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    y = np.repeat(np.arange(k), n_per)
    return (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def test_targets_sharpen_the_soft_assignments():
    z, centres = torch.randn(50, 3), torch.randn(4, 3)
    q = deep.soft_assign(z, centres)
    p = deep.sharpen(q)
    assert q.shape == p.shape == (50, 4)
    assert torch.allclose(q.sum(1), torch.ones(50)) and torch.allclose(p.sum(1), torch.ones(50))
    assert bool((q.argmin(1) == torch.cdist(z, centres).argmax(1)).all())  # farthest centre, least weight
    # the target is more confident than q where q is confident (each point's largest share grows on average)
    assert p.max(1).values.mean() > q.max(1).values.mean()


def test_dec_moves_the_centres_to_the_clusters_a_bad_start_missed():
    """Three clusters along a line (at 0, 4, 8), started from a partition cut at 1 and 2:
    the starting centres' nearest points split the middle cluster (0.70 ACC). Training the
    encoder and centres on the sharpened targets ends near the true partition."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 300)
    x = np.stack([np.array([0.0, 4.0, 8.0])[y] + rng.normal(scale=0.7, size=len(y)),
                  rng.normal(scale=0.7, size=len(y))], 1).astype(np.float32)
    init = np.digitize(x[:, 0], [1.0, 2.0])
    start = torch.stack([torch.from_numpy(x[init == c]).mean(0) for c in range(3)])
    nearest = deep.soft_assign(torch.from_numpy(x), start).argmax(1).numpy()
    enc = nn.Linear(2, 2)
    with torch.no_grad():
        enc.weight.copy_(torch.eye(2))
        enc.bias.zero_()
    result = deep.fit(enc, x, init, steps=200, seed=0, gamma=0.0, **RECIPE)
    assert scores(y, nearest)["acc"] < 0.75 < 0.99 < scores(y, result.labels)["acc"]
    assert result.steps == 200 and result.centres.shape == (3, 2)
    assert np.array_equal(result.predict(x), result.labels)  # ran to the end: the trained encoder's labels
    assert [h["step"] for h in result.history] == list(range(0, 200, 20))


def test_dec_stops_once_the_labels_settle_and_takes_any_cluster_ids():
    """tol: stop at the first target update after which fewer labels changed. Cluster ids
    need not be 0..k-1 (a clusterer may leave one empty): the result's are."""
    x, y = blobs(k=3)
    enc = nn.Linear(x.shape[1], 4)
    result = deep.fit(enc, x, np.array([3, 7, 9])[y], steps=500, seed=0, gamma=0.0, **{**RECIPE, "tol": 1.0})
    assert result.steps == RECIPE["update"] and len(result.history) == 2
    assert set(np.unique(result.labels)) <= {0, 1, 2}
    with pytest.raises(ConfigError, match="600 samples but 5 cluster assignments"):
        deep.fit(enc, x, y[:5], steps=1, seed=0, gamma=0.0, **RECIPE)


def test_dec_trains_the_decoder_only_with_a_reconstruction_term():
    x, y = blobs(k=3)
    for gamma, moves in ((0.0, False), (1.0, True)):
        enc, dec = nn.Linear(x.shape[1], 3), nn.Linear(3, x.shape[1])
        before = dec.weight.detach().clone()
        deep.fit(enc, x, y, decoder=dec, steps=5, seed=0, gamma=gamma, **RECIPE)
        assert (not torch.equal(before, dec.weight)) is moves


def test_the_saved_model_reassigns_like_the_trained_one_and_an_off_file_says_so(tmp_path):
    """`latentlab predict` (export.method=autoencoder_dec) loads the stage's file: the autoencoder
    whose encoder DEC trained and the centres. It must assign new points as the fit did."""
    from latentlab import models

    x, y = blobs(k=3)
    hp = {"model": {"_target_": "latentlab.models.MLPAutoencoder", "latent_dim": 3, "hidden": [16]},
          "input_shape": [x.shape[1]]}
    ae = models.build(hp["model"], hp["input_shape"])
    result = deep.fit(ae.encoder, x, y, decoder=ae.decoder, steps=30, seed=0, gamma=0.1, **RECIPE)
    deep.save(tmp_path / "dec.pt", result, hp, ae)
    loaded = deep.load(tmp_path / "dec.pt")
    assert np.array_equal(loaded.labels, result.labels) and loaded.steps == 30 and loaded.history == result.history
    x_new = x + np.random.default_rng(1).normal(scale=0.5, size=x.shape).astype(np.float32)
    assert np.array_equal(loaded.predict(x_new), result.predict(x_new))
    assert loaded.encoder is not ae.encoder and not loaded.encoder.training
    deep.save(tmp_path / "off.pt", None)
    with pytest.raises(ConfigError, match="holds no DEC model: it was written with dec.enabled=false"):
        deep.load(tmp_path / "off.pt")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["dec.pt", "off.pt"]  # no temporary file left


def test_exporting_dec_needs_it_turned_on(tiny_cfg):
    from latentlab import metric_names as M
    from latentlab.choices import EXPORT_METHODS

    assert set(EXPORT_METHODS) <= set(M.AUTOENCODER_METHODS) and tiny_cfg["export"]["method"] == M.FINAL
    c = with_value(tiny_cfg, "export.method", "autoencoder_dec")
    with pytest.raises(ConfigError, match="export.method=autoencoder_dec needs dec.enabled=true"):
        validate(c)
    validate(with_value(c, "dec.enabled", True))
    with pytest.raises(ConfigError, match=r"export.method must be one of .*, got 'raw_selflabel'"):
        validate(with_value(tiny_cfg, "export.method", "raw_selflabel"))


@pytest.mark.parametrize("key, value, message", [
    ("dec.enabled", "yes", "dec.enabled must be true or false, got 'yes'"),
    ("dec.steps", 0, "dec.steps must be an int >= 1, got 0"),
    ("dec.lr", 0.0, r"dec.lr must be a number in \(0.0, 10.0\], got 0.0"),
    ("dec.augment.translate", 0.9, r"dec.augment.translate must be a number in \[0.0, 0.5\], got 0.9"),
])
def test_bad_dec_settings_are_refused_by_name(tiny_cfg, key, value, message):
    with pytest.raises(ConfigError, match=message):
        validate(with_value(tiny_cfg, key, value))
