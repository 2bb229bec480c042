"""Obtaining, verifying and preparing datasets, from the local mirror only."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from latentlab import data
from latentlab.data import DataError, Prepared


def test_mnist_from_mirror_is_complete_and_verified(mirror):
    ds = data.prepare("mnist", mirror=str(mirror))
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10000, 1, 28, 28)
    # published label counts (shared/datasets/README.md)
    assert np.bincount(ds.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(ds.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.meta["files_sha256"] == data.RAW_SHA256["MNIST"]


def test_subset_and_round_trip(mirror, tmp_path):
    ds = data.prepare("mnist", mirror=str(mirror), max_train=100, max_test=30)
    path = tmp_path / "p.npz"
    ds.save(path)
    back = Prepared.load(path)
    assert back.x_train.shape == (100, 1, 28, 28) and len(back.y_test) == 30
    assert back.meta["sha256"] == ds.meta["sha256"]
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temporary file left
    x_fit, y_fit, x_score, y_score = back.split("all")
    assert len(x_fit) == len(x_score) == 130
    x_fit, _, x_score, _ = back.split("train_test")
    assert (len(x_fit), len(x_score)) == (100, 30)


def _copy_mirror(mirror: Path, dst: Path) -> Path:
    """A writable copy of the read-only mirror, to damage."""
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.RAW_SHA256["MNIST"]:
        shutil.copyfile(mirror / "MNIST" / "raw" / name, raw / name)
    return dst


def test_truncated_file_names_file_and_expected_checksum(mirror, tmp_path):
    bad = _copy_mirror(mirror, tmp_path / "mirror")
    f = bad / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DataError) as err:
        data.prepare("mnist", mirror=str(bad))
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte" in msg and data.RAW_SHA256["MNIST"]["t10k-labels-idx1-ubyte"] in msg


def test_corrupt_file_stage_leaves_no_output(mirror, tmp_path, tiny_cfg):
    from latentlab.stages.download import download

    bad = _copy_mirror(mirror, tmp_path / "mirror")
    f = bad / "MNIST" / "raw" / "train-images-idx3-ubyte"
    with open(f, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xff" * 16)
    tiny_cfg["data"]["mirror"] = str(bad)
    out = tmp_path / "out" / "prepared.npz"
    with pytest.raises(DataError, match="train-images-idx3-ubyte is corrupt"):
        download(tiny_cfg, out)
    assert not out.exists()


def test_mirror_without_dataset_says_where_it_looked(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no KMNIST/raw/ folder"):
        data.prepare("kmnist", mirror=str(tmp_path / "empty"))


def test_mirror_that_is_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"LATENTLAB_DATA_MIRROR=.*nope.* is not a directory"):
        data.prepare("mnist")


def test_no_mirror_no_network_fails_fast_with_advice(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    monkeypatch.delenv(data.MIRROR_ENV)
    # A port nothing listens on: the same refusal an offline machine gives, without the wait.
    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:9/mnist/"])
    with pytest.raises(DataError) as err:
        data.prepare("mnist", cache=str(tmp_path / "cache"))
    msg = str(err.value)
    assert "LATENTLAB_DATA_MIRROR" in msg and "data=digits" in msg
    assert not (tmp_path / "cache" / "MNIST").exists()  # no half-downloaded folder


def test_gz_mirror_is_downloaded_verified_and_cached(mirror, tmp_path):
    import gzip

    gz_mirror = tmp_path / "gzmirror" / "MNIST" / "raw"
    gz_mirror.mkdir(parents=True)
    for name in data.RAW_SHA256["MNIST"]:
        # torchvision checks the md5 of each archive; write archives whose md5 we then publish.
        with open(mirror / "MNIST" / "raw" / name, "rb") as src, gzip.open(gz_mirror / f"{name}.gz", "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst)
    import torchvision.datasets as tvd

    resources = [(f"{n}.gz", data.md5_file(gz_mirror / f"{n}.gz")) for n in data.RAW_SHA256["MNIST"]]
    old = tvd.MNIST.resources
    tvd.MNIST.resources = resources
    try:
        ds = data.prepare("mnist", mirror=str(tmp_path / "gzmirror"), cache=str(tmp_path / "cache"), max_train=10)
    finally:
        tvd.MNIST.resources = old
    assert ds.meta["source"] == str(tmp_path / "cache" / "MNIST" / "raw")
    assert len(ds.x_train) == 10


def test_digits_is_offline_and_stratified():
    ds = data.prepare("digits")
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.x_train.dtype == np.uint8
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.x_train.max() == 255
    assert set(np.unique(ds.y_test)) == set(range(10))


def test_digits28_are_the_same_digits_framed_as_mnist():
    """The 8x8 digits, split alike, each upsampled to 20x20 in the middle of a 28x28 frame."""
    import torch

    small, big = data.prepare("digits"), data.prepare("digits28")
    assert big.x_train.shape[1:] == (1, 28, 28) and big.x_train.dtype == np.uint8
    assert np.array_equal(small.y_train, big.y_train) and np.array_equal(small.y_test, big.y_test)
    frame = big.x_train.copy()
    frame[:, :, 4:24, 4:24] = 0
    assert frame.max() == 0 and big.x_train.max() > 200  # MNIST's 4-pixel empty border
    back = torch.nn.functional.interpolate(torch.tensor(big.x_train[:, :, 4:24, 4:24], dtype=torch.float32),
                                           size=8, mode="area").numpy().reshape(len(big.x_train), -1)

    def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # per image, of the pixels
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))

    orig = small.x_train.reshape(len(small.x_train), -1).astype(np.float32)
    assert corr(back, orig).min() > 0.9  # each image is its 8x8 digit (0.92 at worst) ...
    assert corr(back, orig[::-1]).mean() < 0.7  # ... and not some other one (0.55 on average)


def test_unknown_dataset():
    with pytest.raises(DataError, match=r"data.name must be one of .* got 'cifar'"):
        data.prepare("cifar")


def _gz_mirror(mirror: Path, dst: Path, tamper: str | None = None) -> Path:
    """The MNIST files gzip-compressed anew (level 1: not torchvision's archives, same content),
    one of them with 16 bytes changed when ``tamper`` names it."""
    import gzip

    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.RAW_SHA256["MNIST"]:
        content = bytearray((mirror / "MNIST" / "raw" / name).read_bytes())
        if name == tamper:
            content[1000:1016] = b"\xff" * 16
        with gzip.open(raw / f"{name}.gz", "wb", compresslevel=1) as f:
            f.write(bytes(content))
    return dst


def test_a_recompressed_mirror_is_verified_by_its_content(mirror, tmp_path):
    """A distribution's re-compressed archives differ in md5 but hold the published bytes."""
    import torchvision.datasets as tvd

    gz = _gz_mirror(mirror, tmp_path / "gz")
    name, md5 = tvd.MNIST.resources[0]
    assert data.md5_file(gz / "MNIST" / "raw" / name) != md5
    ds = data.prepare("mnist", mirror=str(gz), cache=str(tmp_path / "cache"), max_train=10)
    assert len(ds.x_train) == 10


def test_a_recompressed_mirror_with_other_content_says_which_check_failed(mirror, tmp_path):
    gz = _gz_mirror(mirror, tmp_path / "gz", tamper="train-labels-idx1-ubyte")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz decompresses to content with sha256 \w+, "
                                        r"expected 65a50cbb.*md5 \w+ is not torchvision's"):
        data.prepare("mnist", mirror=str(gz), cache=str(tmp_path / "cache"), max_train=10)
    assert not (tmp_path / "cache" / "MNIST").exists()
