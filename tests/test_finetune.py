"""Self-labelling: which pseudo-labels it trusts, that it corrects wrong ones, that it is
deterministic, and that its saved classifier reloads to the same function."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from latentlab import finetune as ft
from latentlab.data import prepare
from latentlab.errors import ConfigError
from latentlab.metrics import cluster_accuracy
from latentlab.models import MLPAutoencoder

CPU = {"accelerator": "cpu", "enable_progress_bar": False, "deterministic": True}


def test_confident_subset_takes_the_top_of_every_cluster():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    score = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.8, 0.0])
    # half of each cluster, rounded up: the small cluster keeps its only member
    assert ft.confident_subset(labels, score, k=3, fraction=0.5).tolist() == [1, 3, 5, 6]
    assert ft.confident_subset(labels, score, k=3, fraction=1.0).tolist() == list(range(7))
    with pytest.raises(ConfigError, match="7 labels but 6 scores"):
        ft.confident_subset(labels, score[:6], k=3, fraction=0.5)


def test_reliability_ranks_by_neighbour_agreement_then_tiebreak():
    labels = np.array([0, 0, 1, 1])
    neighbors = np.array([[1, 2], [0, 2], [3, 0], [0, 1]])  # agreement 1/2, 1/2, 1/2, 0
    r = ft.reliability(labels, neighbors, tiebreak=np.array([3.0, 1.0, 2.0, 9.0]))
    assert r[0] > r[1] and r[2] > r[3] and r[3] < 0.01  # point 3's high tiebreak does not beat agreement


@pytest.fixture(scope="module")
def noisy_digits(mirror):
    """2,000 MNIST images of digits 0-4 whose labels are 30% wrong (uniformly)."""
    ds = prepare("mnist", mirror=str(mirror), cache=None, max_train=4000, max_test=10)
    keep = ds.y_train < 5
    x, y = ds.x_train[keep][:2000], ds.y_train[keep][:2000]
    rng = np.random.default_rng(0)
    noisy = y.copy()
    flip = rng.random(len(y)) < 0.3
    noisy[flip] = (y[flip] + rng.integers(1, 5, flip.sum())) % 5
    feats = PCA(20, random_state=0).fit_transform(x.reshape(len(x), -1) / 255.0)
    neighbors = NearestNeighbors(n_neighbors=11).fit(feats).kneighbors(feats, return_distance=False)[:, 1:]
    return x, y, noisy, neighbors


def _run(noisy_digits, **kw):
    x, _, noisy, neighbors = noisy_digits
    torch.manual_seed(0)  # the same starting encoder every time (the stage loads a saved one)
    ae = MLPAutoencoder(input_shape=(1, 28, 28), latent_dim=8, hidden=(128,))
    args = dict(k=5, rounds=1, epochs=8, fraction=0.6, lr=1e-3, batch_size=64,
                augment={"degrees": 10.0, "translate": 0.1}, seed=0, latent_dim=8, trainer=CPU)
    return ft.self_label(ae, x, noisy, np.zeros(len(x)), neighbors=neighbors, **{**args, **kw})


def test_self_labelling_corrects_most_wrong_labels(noisy_digits):
    _, y, noisy, _ = noisy_digits
    before = cluster_accuracy(y, noisy)
    result = _run(noisy_digits)
    after = cluster_accuracy(y, result.labels)
    assert before < 0.72 and after > 0.9, (before, after)
    assert result.rounds[0]["n_used"] == pytest.approx(0.6 * len(y), abs=5)
    assert result.labels.shape == y.shape and result.confidence.shape == y.shape


def test_self_labelling_is_deterministic_and_rounds_zero_is_a_no_op(noisy_digits):
    a, b = _run(noisy_digits, epochs=2), _run(noisy_digits, epochs=2)
    assert np.array_equal(a.labels, b.labels) and a.rounds == b.rounds
    off = _run(noisy_digits, rounds=0)
    assert off.net is None and np.array_equal(off.labels, noisy_digits[2])


def test_saved_classifier_reloads_to_the_same_predictions(noisy_digits, tmp_path):
    x = noisy_digits[0]
    result = _run(noisy_digits, epochs=1)
    from latentlab import training
    from latentlab.training import FitResult

    ae_path = tmp_path / "ae.pt"
    ae = MLPAutoencoder(input_shape=(1, 28, 28), latent_dim=8, hidden=(128,))
    model_cfg = {"_target_": "latentlab.models.MLPAutoencoder", "latent_dim": 8, "hidden": [128],
                 "activation": "relu", "input_dropout": 0.0}
    training.save(FitResult(net=ae, hparams={"model": model_cfg, "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
                                             "input_shape": (1, 28, 28)},
                            history=[], best_val_loss=0.0, best_epoch=0), ae_path)
    ft.save(result, ae_model=ae_path, path=tmp_path / "clf.pt")
    back = ft.load(tmp_path / "clf.pt")
    np.testing.assert_array_equal(ft.predict_proba(back, x).argmax(1), result.labels)
    ft.save(_run(noisy_digits, rounds=0), ae_model=ae_path, path=tmp_path / "none.pt")
    with pytest.raises(ConfigError, match="finetune.rounds=0"):
        ft.load(tmp_path / "none.pt")


def test_consensus_matches_cluster_ids_before_comparing():
    a = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    b = np.array([5, 5, 7, 9, 9, 7, 7, 5])  # 5 <-> 0, 9 <-> 1, 7 <-> 2
    assert ft.consensus(a, b).tolist() == [True, True, False, True, True, True, True, False]
    with pytest.raises(ConfigError, match="8 assignments with 3"):
        ft.consensus(a, b[:3])


def test_vote_is_hard_where_two_clusterings_agree_and_split_where_not():
    a = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    b = np.array([5, 5, 7, 9, 9, 7, 7, 5])  # 5 <-> 0, 9 <-> 1, 7 <-> 2
    v = ft.vote(a, b, k=3)
    assert v.shape == (8, 3) and v.dtype == np.float32
    np.testing.assert_allclose(v.sum(1), 1.0)
    np.testing.assert_allclose(v[0], [1, 0, 0])  # both say 0
    np.testing.assert_allclose(v[2], [0.5, 0, 0.5])  # a says 0, b's 7 is a's 2
    np.testing.assert_allclose(v[7], [0.5, 0, 0.5])  # a says 2, b's 5 is a's 0
    assert ft.match(a, b).tolist() == [0, 0, 2, 1, 1, 2, 2, 0]


def test_soft_labels_train_on_every_image_and_must_fit(noisy_digits):
    x, y, noisy, _ = noisy_digits
    rng = np.random.default_rng(1)
    other = y.copy()
    flip = rng.random(len(y)) < 0.3
    other[flip] = (y[flip] + rng.integers(1, 5, flip.sum())) % 5
    soft = ft.vote(noisy, other, k=5)
    result = _run(noisy_digits, classifier="conv", soft=soft, fraction=1.0, epochs=4, lr=3e-3,
                  lr_schedule="onecycle", label_smoothing=0.1)
    assert result.rounds[0]["n_used"] == len(x)
    assert cluster_accuracy(y, result.labels) > 0.9
    with pytest.raises(ConfigError, match=r"soft labels of shape \(2000, 4\), expected \(2000, 5\)"):
        _run(noisy_digits, soft=soft[:, :4])


def test_conv_classifier_on_consensus_labels_corrects_and_reloads(noisy_digits, tmp_path):
    x, y, noisy, _ = noisy_digits
    # A second, independently noisy clustering: where the two agree, labels are mostly right.
    rng = np.random.default_rng(1)
    other = y.copy()
    flip = rng.random(len(y)) < 0.3
    other[flip] = (y[flip] + rng.integers(1, 5, flip.sum())) % 5
    agree = ft.consensus(noisy, other)
    assert cluster_accuracy(y[agree], noisy[agree]) > 0.85
    result = _run(noisy_digits, classifier="conv", candidates=agree, fraction=1.0, epochs=4, lr=3e-3,
                  lr_schedule="onecycle", label_smoothing=0.1, channels=(16, 32))
    assert result.rounds[0]["n_used"] == agree.sum()
    assert isinstance(result.net, ft.ConvNet) and cluster_accuracy(y, result.labels) > 0.9
    assert [m.out_channels for m in result.net.net if isinstance(m, torch.nn.Conv2d)] == [16, 32]
    ft.save(result, ae_model=tmp_path / "unused.pt", path=tmp_path / "conv.pt")  # needs no autoencoder
    loaded = ft.load(tmp_path / "conv.pt")
    assert loaded.channels == (16, 32)
    np.testing.assert_array_equal(ft.predict_proba(loaded, x).argmax(1), result.labels)


def test_conv_classifier_widths_must_fit_the_images():
    assert ft.ConvNet((1, 28, 28), k=10, channels=(8, 8, 8))(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"finetune.channels=\[8, 8, 8, 8, 8\]: 5 pooling blocks need images "
                                          r"of at least 32x32, got 28x28"):
        ft.ConvNet((1, 28, 28), k=10, channels=(8, 8, 8, 8, 8))


def test_conv_classifier_needs_images():
    with pytest.raises(ConfigError, match=r"classifier=conv needs images \(C, H, W\), got inputs of shape \(13,\)"):
        ft.ConvNet((13,), k=3)
