"""The user's own data: tables, arrays, image folders; every bad input a clear error before training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from latentlab import clustering, sources
from latentlab.config import compose, validate
from latentlab.data import NO_LABEL, Prepared, prepare
from latentlab.errors import ConfigError, DataError, LatentlabError

from conftest import with_value


def _table(tmp_path, name="t.csv", **cols):
    df = pd.DataFrame(cols)
    path = tmp_path / name
    df.to_parquet(path) if name.endswith(".parquet") else df.to_csv(path, index=False)
    return path


def _prep(path, **kw):
    d = {"path": str(path), "features": None, "label": None, "id": None, "scaling": "standard", "key": "x",
         "label_key": None, "size": None, "channels": 1, **kw}
    name = {".csv": "table", ".parquet": "table", ".npy": "array", ".npz": "array"}.get(path.suffix, "images")
    return prepare(name, source=d, test_fraction=0.25, seed=0)


def test_table_features_by_pattern_label_and_id(tmp_path):
    rng = np.random.default_rng(0)
    path = _table(tmp_path, "t.parquet", sample=[f"s{i}" for i in range(40)], a_1=rng.normal(size=40),
                  a_2=rng.normal(5, 3, 40), other=rng.normal(size=40), kind=["x", "y"] * 20)
    src = sources.read_table(path, features=["a_*"], label="kind", id="sample")
    assert src.x.shape == (40, 2) and src.meta["columns"] == ["a_1", "a_2"]
    assert src.meta["classes"] == ["x", "y"] and src.y.tolist()[:2] == [0, 1] and src.ids[3] == "s3"
    ds = _prep(path, features=["a_*"], label="kind", id="sample")
    assert ds.labelled and len(ds.x_train) == 30 and len(ds.x_test) == 10 and ds.x_train.dtype == np.float32
    # scaled with the training split's statistics only, and stored to apply to new data
    assert np.allclose(ds.x_train.mean(0), 0, atol=1e-6) and np.allclose(ds.x_train.std(0), 1, atol=1e-5)
    scaler = sources.Scaler.from_dict(ds.meta["scaler"])
    raw_test = src.x[np.isin(src.ids, ds.ids_test)]
    np.testing.assert_allclose(scaler.transform(raw_test), ds.x_test, rtol=1e-6)
    back = Prepared.load(ds.save(tmp_path / "p.npz") or tmp_path / "p.npz")
    assert back.ids_train.tolist() == ds.ids_train.tolist() and back.meta["columns"] == ["a_1", "a_2"]


def test_unlabelled_table_and_minmax_scaling(tmp_path):
    path = _table(tmp_path, x=np.arange(20.0), y=np.arange(20.0) ** 2, note=["text"] * 20)
    ds = _prep(path, scaling="minmax")  # `note` is text: left out, said aloud
    assert not ds.labelled and (ds.y_train == NO_LABEL).all() and ds.meta["columns"] == ["x", "y"]
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0


def test_constant_columns_are_dropped_and_logged(tmp_path, capsys):
    path = _table(tmp_path, a=np.arange(12.0), flat=np.ones(12), b=np.arange(12.0) % 5)
    ds = _prep(path)
    assert ds.meta["columns"] == ["a", "b"] and ds.meta["dropped_columns"] == ["flat"]
    assert "dropped 1 constant feature column(s): ['flat']" in capsys.readouterr().out


@pytest.mark.parametrize("make, kw, message", [
    (lambda p: p / "missing.csv", {}, r"data.path='.*missing.csv' does not exist"),
    (lambda p: _table(p, a=[1.0, 2.0]), {"label": "kind"}, r"data.label='kind' is not a column of .*columns are \['a'\]"),
    (lambda p: _table(p, a=[1.0, 2.0]), {"features": ["b*"]}, r"data.features: 'b\*' matches no column"),
    (lambda p: _table(p, a=[1.0, 2.0, 3.0], b=["1.5", "oops", "2"]), {},
     r"feature column 'b' of .* is not numeric \(e.g. 'oops'\)"),
    (lambda p: _table(p, a=[1.0, 2.0], b=["x", "y"]), {"features": ["a", "b"]}, r"column .b. of .* is not numeric"),
    (lambda p: _table(p, a=[1.0, np.nan, 3.0]), {}, r"1 missing \(NaN\) values in its feature columns, first in "
                                                   r"column 'a' at row 1"),
    (lambda p: _table(p, a=[1.0, 1.0, 1.0]), {}, r"every feature column is constant"),
    (lambda p: _table(p, i=["a", "a"], a=[1.0, 2.0]), {"id": "i"}, r"the ids in .* are not unique"),
    (lambda p: _table(p, a=[1.0, 2.0]), {}, r"has 2 samples: too few to split"),
])
def test_bad_tables_are_clear_errors(tmp_path, make, kw, message):
    with pytest.raises(DataError, match=message):
        _prep(make(tmp_path), **kw)


def test_fewer_rows_than_clusters_is_a_clear_error_before_training(tmp_path, tiny_cfg):
    from latentlab.stages.train import train

    with pytest.raises(ConfigError, match="cluster.k=10 is larger than the 6 samples"):
        clustering.fit_predict(np.zeros((6, 2)), None, "x", k=10, n_init=1, max_iter=10, seed=0)
    _prep(_table(tmp_path, a=np.arange(8.0), b=np.arange(8.0) % 3)).save(tmp_path / "d.npz")
    with pytest.raises(LatentlabError, match=r"k=10 \(cluster.k\), but there are only 8 samples to cluster"):
        train(with_value(tiny_cfg, "cluster.k", 10), tmp_path / "d.npz", tmp_path / "m.pt", tmp_path / "h.csv")
    assert not (tmp_path / "m.pt").exists()


def test_arrays_npy_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "f.npy", rng.normal(size=(30, 4)))
    assert _prep(tmp_path / "f.npy").x_train.shape == (22, 4)
    np.savez(tmp_path / "im.npz", images=rng.integers(0, 255, (30, 8, 8), dtype=np.uint8), y=np.repeat([3, 7], 15))
    ds = _prep(tmp_path / "im.npz", key="images", label_key="y")
    assert ds.is_images and ds.x_train.shape[1:] == (1, 8, 8) and ds.meta["classes"] == ["3", "7"]
    np.savez(tmp_path / "bad.npz", x=rng.normal(size=(5, 2, 2)))
    with pytest.raises(DataError, match=r"images of shape \(5, 2, 2\) must be uint8"):
        _prep(tmp_path / "bad.npz")
    with pytest.raises(DataError, match=r"data.label_key='labels' is not in .* it holds \['x'\]"):
        _prep(tmp_path / "bad.npz", label_key="labels")
    np.savez(tmp_path / "mis.npz", x=rng.normal(size=(5, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match="5 samples but 4 labels"):
        _prep(tmp_path / "mis.npz", label_key="y")


def _images(folder, n, size=(10, 12), mode="L"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(n):
        arr = rng.integers(0, 255, (*size, 3) if mode == "RGB" else size, dtype=np.uint8)
        Image.fromarray(arr, mode).save(folder / f"{i}.png")


def test_image_folders_labelled_flat_colour_and_resized(tmp_path):
    _images(tmp_path / "cls/cat", 6)
    _images(tmp_path / "cls/dog", 6, size=(20, 20), mode="RGB")
    ds = _prep(tmp_path / "cls", size=[8, 8])
    assert ds.labelled and ds.meta["classes"] == ["cat", "dog"] and ds.x_train.shape[1:] == (1, 8, 8)
    assert _prep(tmp_path / "cls", size=[8, 8], channels=3).x_train.shape[1:] == (3, 8, 8)
    _images(tmp_path / "flat", 8)
    flat = _prep(tmp_path / "flat")
    assert not flat.labelled and flat.x_train.shape[1:] == (1, 10, 12)
    assert sorted(flat.ids_train.tolist() + flat.ids_test.tolist())[0] == "0.png"


def test_bad_image_folders_are_clear_errors(tmp_path):
    _images(tmp_path / "mixed/a", 3)
    _images(tmp_path / "mixed/b", 3, size=(20, 20))
    with pytest.raises(DataError, match=r"different sizes .*set data.size"):
        _prep(tmp_path / "mixed")
    _images(tmp_path / "broken", 4)
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"1 unreadable image file\(s\) in .*x.png"):
        _prep(tmp_path / "broken")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        _prep(tmp_path / "empty")


@pytest.mark.parametrize("overrides, message", [
    (["data=table"], r"data.path must name a .csv or .parquet file"),
    (["data=table", "data.path=x.csv", "data.scaling=zscore"], r"data.scaling must be one of"),
    (["data=table", "data.path=x.csv", "data.label=a", "data.id=a"], r"name the same column 'a'"),
    (["data=table", "data.path=x.csv", "model=conv"], r"model=conv needs images"),
    (["data=images", "data.path=x", "data.size=[2,2]"], r"data.size must be null or \[H, W\]"),
    (["cluster.select_k=gap"], r"cluster.select_k must be one of"),
    (["cluster.k_range=[5,2]"], r"cluster.k_range must be \[lo, hi\]"),
    (["export.format=xlsx"], r"export.format must be one of \['csv', 'parquet'\]"),
    (["anomaly=unsupervised", "anomaly.normal=[1]"], r"anomaly.normal must be null under protocol unsupervised"),
])
def test_bad_data_config_is_rejected_naming_the_key(overrides, message):
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match=message):
        validate(OmegaConf.to_container(compose(overrides), resolve=True))


def test_select_k_finds_the_blobs():
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(n_samples=300, centers=4, cluster_std=0.5, random_state=0)
    for criterion in clustering.SELECT_K:
        c = clustering.fit_predict(x, None, "blobs", k=10, n_init=2, max_iter=100, seed=0, select_k=criterion,
                                   k_range=[2, 7])
        assert len(np.unique(c.labels)) == 4 and set(c.k_scores) == set(range(2, 8)), criterion
