"""The cluster step: PCA/UMAP + k-means/GMM pipelines, large-n handling, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from latentlab.clustering import exact_neighbors, fit_predict, pipeline_params
from latentlab.config import compose
from latentlab.errors import ConfigError
from latentlab.metrics import cluster_accuracy


def _params(*overrides: str, layout_epochs: int | None = 30) -> dict:
    """The cluster config's fit_predict arguments; a 30-epoch UMAP layout unless said
    (the clusters here are far apart: a longer layout only costs test time)."""
    from omegaconf import OmegaConf

    fast = [f"cluster.umap.n_epochs={layout_epochs}"] if layout_epochs else []
    cfg = OmegaConf.to_container(compose([*fast, *overrides]), resolve=True)
    return pipeline_params(cfg["cluster"], seed=0, select_k=None)  # k given, as resolve_k settles it for labelled data


@pytest.fixture(scope="module")
def blobs():
    # 6 clusters in 40 dims, anisotropic enough that PCA-less k-means is not a given.
    x, y = make_blobs(n_samples=1800, n_features=40, centers=6, cluster_std=3.0, random_state=3)
    return x.astype(np.float32), y


@pytest.mark.parametrize("preset", [["cluster=kmeans"], ["cluster=n2d"], ["cluster=n2d", "cluster.algorithm=kmeans"],
                                    ["cluster=kmeans", "cluster.pca=5", "cluster.standardize=true"]])
def test_every_pipeline_recovers_separated_clusters(blobs, preset):
    x, y = blobs
    labels, _, pipe, _ = fit_predict(x, None, "test", **{**_params(*preset), "k": 6})
    assert labels.shape == (len(x),) and labels.dtype == np.int64
    assert cluster_accuracy(y, labels) > 0.99, preset


def test_exact_neighbors_match_scikit_learn():
    from sklearn.neighbors import NearestNeighbors

    x = np.random.default_rng(0).normal(size=(3000, 12)).astype(np.float32)
    d_ref, i_ref = NearestNeighbors(n_neighbors=15).fit(x).kneighbors(x)
    # tiles that do not divide N, square ones, one tile of every column, columns fewer than k
    for rows, cols in ((700, 900), (1000, 1000), (3000, 3000), (512, 7)):
        idx, dist = exact_neighbors(x, 15, rows=rows, cols=cols)
        assert idx.shape == dist.shape == (3000, 15)
        assert (idx[:, 0] == np.arange(len(x))).all() and np.allclose(dist[:, 0], 0, atol=1e-3)
        assert (idx == i_ref).mean() > 0.999 and np.allclose(dist, d_ref, atol=1e-3), (rows, cols)


def test_exact_cosine_neighbors_match_scikit_learn():
    from sklearn.neighbors import NearestNeighbors

    from latentlab.clustering import exact_cosine_neighbors

    x = np.random.default_rng(1).normal(size=(2000, 8)).astype(np.float32) * 5
    d_ref, i_ref = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(x).kneighbors(x)
    idx, dist = exact_cosine_neighbors(x, 10, rows=300, cols=700)
    assert (idx == i_ref).mean() > 0.999 and np.allclose(dist, d_ref, atol=1e-4)


def test_umap_layout_epochs_reach_umap_learn():
    from latentlab.clustering import make_manifold

    default = _params("cluster=n2d", layout_epochs=None)["umap"]
    assert make_manifold(default, 0).n_epochs == 100  # the default's, from conf/cluster
    assert make_manifold({**default, "n_epochs": None}, 0).n_epochs is None  # umap-learn picks
    x, _ = make_blobs(n_samples=300, n_features=5, centers=3, random_state=0)
    pipe = fit_predict(x.astype(np.float32), None, "test",
                       **{**_params("cluster=n2d", "cluster.umap.n_epochs=7"), "k": 3}).pipeline
    assert pipe[-2].n_epochs == 7 and pipe[-2].embedding_.shape == (300, 10)


def test_umap_of_every_fitted_point_is_built_on_the_exact_graph():
    # Every size: umap-learn would run NN-descent above 4,096 points, and below it compute all
    # the distances through a Python callback.
    x, y = make_blobs(n_samples=2000, n_features=10, centers=5, cluster_std=2.0, random_state=1)
    x = x.astype(np.float32)
    labels, _, pipe, _ = fit_predict(x, None, "test", **{**_params("cluster=n2d"), "k": 5})
    idx, dist, index = pipe[-2].precomputed_knn
    assert index is None and idx.shape == (2000, 20) and (idx[:, 0] == np.arange(2000)).all()
    assert cluster_accuracy(y, labels) > 0.99
    # cosine too, in its own distance (1 - cos: at most 2, where euclidean ones here reach ~10)
    labels, _, pipe, _ = fit_predict(x, None, "cos", **{**_params("cluster=n2d", "cluster.umap.metric=cosine"), "k": 5})
    idx, dist, index = pipe[-2].precomputed_knn
    assert index is None and (idx[:, 0] == np.arange(2000)).all() and dist.max() <= 2
    assert cluster_accuracy(y, labels) > 0.95


def test_n2d_is_deterministic_for_a_seed(blobs):
    x, _ = blobs
    p = {**_params("cluster=n2d"), "k": 6}
    a, *_ = fit_predict(x, None, "a", **p)
    b, *_ = fit_predict(x.copy(), None, "b", **p)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("assign_rest", ["neighbors", "transform"])
def test_large_inputs_fit_on_a_sample_and_assign_every_point(blobs, capsys, assign_rest):
    x, y = blobs
    p = {**_params("cluster=n2d"), "k": 6, "max_fit": 1000, "assign_rest": assign_rest}
    labels, typ, pipe, _ = fit_predict(x, None, "sampled", **p)
    assert "on 1000x40" in capsys.readouterr().out
    assert len(labels) == len(x) == len(typ) and cluster_accuracy(y, labels) > 0.99
    assert np.isfinite(typ).all()


def test_neighbour_assignment_keeps_the_fitted_samples_own_labels(blobs):
    x, _ = blobs
    p = {**_params("cluster=n2d"), "k": 6, "max_fit": 1000, "seed": 3}
    labels, typ, pipe, _ = fit_predict(x, None, "sampled", **p)
    pick = np.sort(np.random.default_rng(3).choice(len(x), size=1000, replace=False))
    xt = pipe[:-1].transform(x[pick])  # not the fit's own embedding, but the same clusters
    assert adjusted_rand_score(labels[pick], pipe[-1].predict(xt)) > 0.99
    with pytest.raises(ConfigError, match="cluster.assign_rest must be one of .*got 'nearest'"):
        fit_predict(x, None, "bad", **{**p, "assign_rest": "nearest"})


def test_kmeans_switches_to_minibatch_above_the_threshold(blobs):
    x, y = blobs
    labels, _, pipe, _ = fit_predict(x, None, "mb", **{**_params("cluster=kmeans"), "k": 6, "minibatch_above": 1000})
    assert isinstance(pipe.named_steps["cluster"], MiniBatchKMeans)
    full, *_ = fit_predict(x, None, "full", **{**_params("cluster=kmeans"), "k": 6})
    assert adjusted_rand_score(labels, full) > 0.99


def test_train_test_protocol_assigns_unseen_points(blobs):
    x, y = blobs
    labels, *_ = fit_predict(x[:1200], x[1200:], "split", **{**_params("cluster=n2d"), "k": 6})
    assert len(labels) == 600 and cluster_accuracy(y[1200:], labels) > 0.99


@pytest.mark.parametrize("override, message", [
    ("cluster.manifold=tsne", "cluster.manifold must be one of ['none', 'umap'], got 'tsne'"),
    ("cluster.algorithm=dbscan", "cluster.algorithm must be one of ['kmeans', 'gmm'], got 'dbscan'"),
    ("cluster.umap.n_neighbors=1", "cluster.umap.n_neighbors must be an int in [2, 1000], got 1"),
    ("cluster.umap.n_epochs=0", "cluster.umap.n_epochs must be an int in [1, 10000] or null, got 0"),
    ("cluster.umap.min_dist=-0.1", "cluster.umap.min_dist must be a number in [0.0, 1.0], got -0.1"),
    ("cluster.covariance_type=round", "cluster.covariance_type must be one of"),
    ("cluster.max_fit=1", "cluster.max_fit=1 must be at least the least k, 2 (cluster.k, or cluster.k_range's low end)"),
    ("cluster.assign_rest=nearest", "cluster.assign_rest must be one of ['neighbors', 'transform'], got 'nearest'"),
    ("cluster=dbscan", "Could not find 'cluster/dbscan'"),
    ("train.augment.degrees=-5", "train.augment.degrees must be a number in [0.0, 180.0], got -5"),
    ("train.augment.translate=0.7", "train.augment.translate must be a number in [0.0, 0.5], got 0.7"),
    ("train.augment.target=clean", "train.augment.target must be one of ['auto', 'augmented', 'original'], got 'clean'"),
])
def test_bad_cluster_settings_are_refused(override, message):
    from latentlab.config import validate

    with pytest.raises(Exception) as e:
        validate(compose([override]))
    assert message in str(e.value)
    if "Could not find" not in message:
        assert isinstance(e.value, ConfigError)
