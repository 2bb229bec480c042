"""Self-labelling: which pseudo-labels it trusts, that it corrects wrong ones, that it is
deterministic, and that its saved classifier reloads to the same function."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from latentlab import finetune as ft
from latentlab.data import prepare
from latentlab.errors import ConfigError
from latentlab.metrics import cluster_accuracy
from latentlab.models import MLPAutoencoder, to_float

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


MODEL = {"_target_": "latentlab.models.MLPAutoencoder", "latent_dim": 8, "hidden": [128],
         "activation": "relu", "input_dropout": 0.0}


def _run(noisy_digits, net=None, **kw):
    x, _, noisy, neighbors = noisy_digits
    if net is None:
        torch.manual_seed(0)  # the same starting encoder every time (the stage loads a saved one)
        ae = MLPAutoencoder(input_shape=(1, 28, 28), latent_dim=8, hidden=(128,))
        net = ft.encoder_classifier(ae, 8, 5, seed=0)
    args = dict(k=5, rounds=1, epochs=8, fraction=0.6, lr=1e-3, batch_size=64,
                augment={"degrees": 10.0, "translate": 0.1}, seed=0, trainer=CPU)
    return ft.self_label(net, x, noisy, np.zeros(len(x)), neighbors=neighbors, **{**args, **kw})


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


def test_soft_targets_learn_the_last_relabelling_sharpened(noisy_digits):
    """targets=soft: the second round trains on the first round's probabilities, sharpened
    (its argmax kept, its doubt kept smaller), and still corrects the noisy labels."""
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    s = ft.sharpen(p)
    assert s.dtype == np.float32 and np.allclose(s.sum(1), 1.0) and (s.argmax(1) == p.argmax(1)).all()
    assert np.allclose(s[0], np.array([36, 9, 1]) / 46) and (s.max(1) > p.max(1)).all()
    _, y, _, _ = noisy_digits
    hard = _run(noisy_digits, rounds=2, epochs=3)
    soft = _run(noisy_digits, rounds=2, epochs=3, targets="soft")
    assert hard.rounds[0] == soft.rounds[0]  # the first round has only the clusterer's hard labels
    assert soft.rounds[1]["loss"] != hard.rounds[1]["loss"]
    assert cluster_accuracy(y, soft.labels) > 0.85, (cluster_accuracy(y, soft.labels), cluster_accuracy(y, hard.labels))


def test_saved_classifier_reloads_to_the_same_predictions(noisy_digits, tmp_path):
    x = noisy_digits[0]
    result = _run(noisy_digits, epochs=1)
    ft.save(result, tmp_path / "clf.pt", model=MODEL, input_shape=(1, 28, 28))
    back = ft.load(tmp_path / "clf.pt")
    np.testing.assert_array_equal(ft.predict_proba(back, x).argmax(1), result.labels)
    with pytest.raises(ConfigError, match="needs the model config and input shape"):
        ft.save(result, tmp_path / "bad.pt")
    ft.save(_run(noisy_digits, rounds=0), tmp_path / "none.pt")
    with pytest.raises(ConfigError, match="finetune.rounds=0"):
        ft.load(tmp_path / "none.pt")


def test_relabelling_over_views_is_their_seeded_mean_and_the_checkpoint_repeats_it(noisy_digits, tmp_path):
    x = noisy_digits[0]
    result = _run(noisy_digits, epochs=1, views=4)
    aug = {"degrees": 10.0, "translate": 0.1}
    assert result.relabel == {"views": 4, "augment": aug, "seed": 0}
    net = result.net
    plain = ft.predict_proba(net, x)
    four = ft.predict_proba(net, x, views=4, augment=aug, seed=0)
    np.testing.assert_allclose(four.sum(1), 1.0, rtol=1e-5)
    assert not np.allclose(four, plain)  # the augmented views count
    # seeded and the global RNG untouched; the same mean whatever the batch size
    torch.manual_seed(1)
    before = torch.rand(1)
    torch.manual_seed(1)
    np.testing.assert_allclose(ft.predict_proba(net, x, batch_size=333, views=4, augment=aug, seed=0), four, atol=1e-6)
    assert torch.rand(1) == before
    # views=1, or no augmentation: the images alone
    np.testing.assert_array_equal(ft.predict_proba(net, x, views=1, augment=aug), plain)
    np.testing.assert_array_equal(ft.predict_proba(net, x, views=4, augment={"degrees": 0.0, "translate": 0.0}),
                                  plain)
    # `latentlab predict` relabels new images as the last round did
    ft.save(result, tmp_path / "clf.pt", model=MODEL, input_shape=(1, 28, 28))
    args = ft.relabel_args(tmp_path / "clf.pt")
    assert args == result.relabel
    np.testing.assert_array_equal(ft.predict_proba(ft.load(tmp_path / "clf.pt"), x, **args).argmax(1), result.labels)
    two = _run(noisy_digits, epochs=1, rounds=2, views=3)
    assert two.relabel["seed"] == 1  # the last round's views
    np.testing.assert_array_equal(ft.predict_proba(two.net, x, **two.relabel).argmax(1), two.labels)


def test_fresh_cnn_on_every_noisy_label_corrects_and_reloads(noisy_digits, tmp_path):
    """The raw twin's recipe: a network that never saw an autoencoder, every label used."""
    x, y, _, _ = noisy_digits
    net = ft.fresh_classifier((1, 28, 28), 5, seed=0, channels=(16, 32))
    result = _run(noisy_digits, net=net, fraction=1.0, epochs=4, lr=3e-3, lr_schedule="onecycle",
                  label_smoothing=0.1)
    assert result.rounds[0]["n_used"] == len(x)
    assert isinstance(result.net, ft.ConvNet) and cluster_accuracy(y, result.labels) > 0.9
    assert [m.out_channels for m in result.net.net if isinstance(m, torch.nn.Conv2d)] == [16, 32]
    ft.save(result, tmp_path / "conv.pt")  # needs no autoencoder
    loaded = ft.load(tmp_path / "conv.pt")
    assert loaded.channels == (16, 32)
    np.testing.assert_array_equal(ft.predict_proba(loaded, x).argmax(1), result.labels)


def test_fresh_dense_network_for_feature_vectors_reloads(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = (rng.normal(size=(600, 12)) + 3 * np.eye(3, 12)[y]).astype(np.float32)
    net = ft.fresh_classifier((12,), 3, seed=0, channels=(16, 32))
    result = ft.self_label(net, x, y, np.zeros(len(x)), k=3, rounds=1, epochs=3, fraction=1.0, lr=3e-3,
                           batch_size=64, augment={"degrees": 15.0, "translate": 0.1}, seed=0, trainer=CPU)
    assert cluster_accuracy(y, result.labels) > 0.9
    ft.save(result, tmp_path / "mlp.pt")
    np.testing.assert_array_equal(ft.predict_proba(ft.load(tmp_path / "mlp.pt"), x).argmax(1), result.labels)


def test_conv_classifier_widths_must_fit_the_images():
    assert ft.ConvNet((1, 28, 28), k=10, channels=(8, 8, 8))(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"finetune.channels=\[8, 8, 8, 8, 8\]: 5 pooling blocks need images "
                                          r"of at least 32x32, got 28x28"):
        ft.ConvNet((1, 28, 28), k=10, channels=(8, 8, 8, 8, 8))


def test_conv_classifier_needs_images():
    with pytest.raises(ConfigError, match=r"self-labelling CNN needs images \(C, H, W\), got inputs of shape \(13,\)"):
        ft.ConvNet((13,), k=3)


def test_the_reconstruction_term_trains_the_decoder_along_and_is_dropped_after(noisy_digits, tmp_path):
    torch.manual_seed(0)
    ae = MLPAutoencoder(input_shape=(1, 28, 28), latent_dim=8, hidden=(128,))
    net = ft.encoder_classifier(ae, 8, 5, seed=0, decoder=True)
    before = [p.clone() for p in net.decoder.parameters()]
    decoder = net.decoder
    result = _run(noisy_digits, net=net, epochs=1, recon_weight=10.0)
    assert any(not torch.equal(a, b) for a, b in zip(before, decoder.parameters()))  # it trained
    assert result.net.decoder is None  # the saved classifier is encoder + head
    assert all(torch.equal(a, b) for a, b in zip(ae.decoder.parameters(), before))  # a copy: the AE stays
    ft.save(result, tmp_path / "clf.pt", model=MODEL, input_shape=(1, 28, 28))
    np.testing.assert_array_equal(ft.predict_proba(ft.load(tmp_path / "clf.pt"), noisy_digits[0]).argmax(1),
                                  result.labels)


def test_a_conv_net_relabels_channels_last_as_it_would_in_the_default_layout_and_trains_on_unchanged(noisy_digits):
    x = noisy_digits[0]
    net = ft.fresh_classifier((1, 28, 28), 5, seed=0, channels=(8, 16))
    aug = {"degrees": 10.0, "translate": 0.1}
    fast = ft.predict_proba(net, x, views=3, augment=aug, seed=0)  # channels-last: a conv net on images
    # back in the default layout, and trainable: the next round trains the net it would have trained
    assert all(p.is_contiguous() and not p.is_inference() for p in net.parameters())
    net.train()
    nn.functional.cross_entropy(net(to_float(torch.from_numpy(x[:8]))), torch.zeros(8, dtype=torch.long)).backward()
    slow = ft.predict_proba(net, x, batch_size=2048, views=3, augment=aug, seed=0, channels_last=False)
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    np.testing.assert_array_equal(fast.argmax(1), slow.argmax(1))


class _Descent(pl.LightningModule):
    """One weight that plain SGD moves by exactly -1 a step: w after step t is -t."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return self.w * 1.0

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=1.0)


def test_late_ema_keeps_the_moving_average_of_the_second_half_of_the_steps():
    steps, decay = 10, 0.5
    module = _Descent()
    dl = torch.utils.data.DataLoader(torch.zeros(steps, 1), batch_size=1)
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
               enable_progress_bar=False, accelerator="cpu", callbacks=[ft.LateEMA(decay, steps)]).fit(module, dl)
    # updates after steps 6..10 (step_idx 5..9): the first copies w = -6, then avg <- decay avg + (1 - decay) w
    expected = -6.0
    for t in range(7, steps + 1):
        expected = decay * expected + (1 - decay) * -t
    assert module.w.item() == pytest.approx(expected) and expected != -steps


def test_ema_rounds_still_correct_wrong_labels_and_end_on_averaged_weights(noisy_digits):
    _, y, _, _ = noisy_digits
    last = _run(noisy_digits, rounds=2, epochs=3)
    ema = _run(noisy_digits, rounds=2, epochs=3, ema=0.9)
    assert ema.rounds[0]["loss"] == last.rounds[0]["loss"]  # the same training; the average is kept at the end
    assert not torch.equal(ema.net.head.weight, last.net.head.weight)
    assert cluster_accuracy(y, ema.labels) > 0.85, (cluster_accuracy(y, ema.labels), cluster_accuracy(y, last.labels))


def test_mixup_trains_on_mixed_pairs_deterministically_and_still_corrects(noisy_digits):
    _, y, _, _ = noisy_digits
    plain = _run(noisy_digits, rounds=1, epochs=3)
    mixed, again = (_run(noisy_digits, rounds=1, epochs=3, mixup=1.0) for _ in range(2))
    # a mixed pair's loss is higher than a clean image's: the mix is what it learns
    assert mixed.rounds[0]["loss"] > plain.rounds[0]["loss"] and mixed.rounds == again.rounds
    assert cluster_accuracy(y, mixed.labels) > 0.85, (cluster_accuracy(y, mixed.labels), cluster_accuracy(y, plain.labels))


def test_restart_trains_every_round_from_the_given_weights(noisy_digits, monkeypatch):
    import copy

    _, y, _, _ = noisy_digits
    torch.manual_seed(0)
    ae = MLPAutoencoder(input_shape=(1, 28, 28), latent_dim=8, hidden=(128,))
    net = ft.encoder_classifier(ae, 8, 5, seed=0)
    given = {key: v.clone() for key, v in net.state_dict().items()}
    starts = []  # the network's weights as each round's training begins

    class Spy(ft.LitSelfLabel):
        def on_train_start(self):
            starts.append({key: v.clone() for key, v in self.net.state_dict().items()})

    monkeypatch.setattr(ft, "LitSelfLabel", Spy)
    cont = _run(noisy_digits, net=copy.deepcopy(net), rounds=2, epochs=2)
    fresh = _run(noisy_digits, net=net, rounds=2, epochs=2, restart=True)
    same = [all(torch.equal(s[key], given[key]) for key in given) for s in starts]
    assert same == [True, False, True, True]  # continued: round 2 from round 1's end; restarted: from the start
    assert cont.rounds[0] == fresh.rounds[0]
    assert cluster_accuracy(y, fresh.labels) > 0.85
