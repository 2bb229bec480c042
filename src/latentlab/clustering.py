"""Clustering of latents and the raw-pixel baselines, as scikit-learn pipelines.

Inputs are float arrays of shape (N, D); outputs are int cluster ids of shape (N,).
A pipeline is: optional z-scoring -> optional PCA -> optional UMAP (the manifold step
of N2D) -> k-means or a Gaussian mixture.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from latentlab.choices import ALGORITHMS, ASSIGN_REST, MANIFOLDS, SELECT_K, check
from latentlab.errors import ConfigError


def exact_neighbors(x: np.ndarray, k: int, rows: int = 512, cols: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows of x (N, D), itself among them (distance 0): indices
    (N, k) int64 and euclidean distances (N, k) float32, nearest first; exact.

    For UMAP's ``precomputed_knn`` when it embeds every point it is fitted on: its own
    NN-descent is as good (99.98% of neighbours exact on MNIST) but spends ~50 s compiling
    itself in every new process. Computed in tiles of rows x cols squared distances (torch,
    both cores), each tile's k best kept, then the best of those: a tile of 8 MB stays in
    cache, where whole 70,000-wide rows of distances did not (70,000 x 10 latents: 16 s
    tiled against 54 s for 1024 whole rows at a time; by the scratch timing in the README)."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n, sq = len(xt), (xt * xt).sum(1)
    k = min(k, n)
    idx = np.empty((n, k), np.int64)
    dist = np.empty((n, k), np.float32)
    with torch.inference_mode():
        for i in range(0, n, rows):
            block, near, which = xt[i:i + rows], [], []
            for j in range(0, n, cols):
                # |a - b|^2 without the row's own |a|^2, which does not change its order
                d2 = torch.addmm(sq[None, j:j + cols], block, xt[j:j + cols].T, alpha=-2)
                lo, hi = max(i, j), min(i + len(block), j + cols)
                if lo < hi:  # the tile holds some of its rows' own points: each itself first, whatever ties
                    r = torch.arange(lo, hi)
                    d2[r - i, r - j] = -float("inf")
                d, c = torch.topk(d2, min(k, d2.shape[1]), dim=1, largest=False)
                near.append(d)
                which.append(c + j)
            d, pos = torch.topk(torch.cat(near, 1), k, dim=1, largest=False, sorted=True)
            d = (d + sq[i:i + rows, None]).clamp_(min=0).sqrt_()
            idx[i:i + rows] = torch.gather(torch.cat(which, 1), 1, pos).numpy()
            dist[i:i + rows] = d.numpy()
    return idx, dist


def exact_cosine_neighbors(x: np.ndarray, k: int, **tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """``exact_neighbors`` under umap-learn's cosine distance, 1 - cos(a, b): on rows scaled
    to unit length, |a - b|^2 / 2 is exactly that, and orders neighbours the same way. A zero
    row stays zero (at distance 0.5 from every unit row; umap-learn would say 1)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    idx, dist = exact_neighbors(x / np.maximum(norm, np.finfo(np.float32).tiny), k, **tiles)
    return idx, dist * dist / 2


EXACT_GRAPHS = {"euclidean": exact_neighbors, "cosine": exact_cosine_neighbors}


def _embed_all(pre: Pipeline, x: np.ndarray) -> np.ndarray:
    """``pre`` (scaling, PCA, UMAP: the pipeline before its clusterer) fitted on x (N, D),
    x transformed; a euclidean or cosine UMAP on the exact neighbour graph (``_fit_umap``).
    Only for a fit whose own points are the scored ones: nothing calls its ``transform``
    later, which would need NN-descent's index."""
    manifold = pre[-1]
    if manifold == "passthrough":
        return pre.fit_transform(x)
    return _fit_umap(manifold, pre[:-1].fit_transform(x))


def _fit_umap(manifold, x: np.ndarray) -> np.ndarray:
    """``manifold`` (a UMAP) fitted on x (N, D) and x embedded, on the exact neighbour graph
    (``EXACT_GRAPHS``) for a euclidean or cosine metric: NN-descent would compile itself in
    every new process first (~50 s of the evaluate stage's 2-D map of 10,000 latents).
    Below 4,096 points umap-learn would compute every distance through a Python callback
    instead: 8 s for the 1,797 digits, 2.5 s on this graph, the same clusters (ACC 0.882-0.883
    both ways, seeds 0-2; /tmp scratch timing)."""
    if manifold.metric not in EXACT_GRAPHS or len(x) <= manifold.n_neighbors:
        return manifold.fit_transform(x)  # fewer points than neighbours: umap-learn shrinks its k itself
    manifold.precomputed_knn = (*EXACT_GRAPHS[manifold.metric](x, manifold.n_neighbors), None)
    with warnings.catch_warnings():  # "transform will be unavailable": by design here
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        return manifold.fit_transform(x)


def _import_umap():
    """umap-learn, its numba functions compiled with ``cache=True``.

    umap-learn compiles ~100 functions anew in every process (pynndescent caches its own):
    about 11 s of each stage process that runs UMAP (cluster, baselines and its worker).
    Compiled once into numba's cache beside the library, a new process's first fit of 2,000
    points takes 5.4 s instead of 17.3 s (bench/startup.py measures it). numba's cache is
    keyed by each source file's stamp: an upgraded umap-learn recompiles."""
    import sys

    if "umap" in sys.modules:
        return sys.modules["umap"]
    import numba

    def cached(decorator):
        def wrapper(*args, **kwargs):
            if len(args) == 1 and callable(args[0]) and not kwargs:  # @numba.njit without arguments
                return decorator(cache=True)(args[0])
            return decorator(*args, **{"cache": True, **kwargs})
        return wrapper

    njit, jit = numba.njit, numba.jit
    numba.njit, numba.jit = cached(njit), cached(jit)
    try:
        with warnings.catch_warnings():  # functions numba cannot cache still compile, as before
            warnings.simplefilter("ignore", numba.NumbaWarning)
            import umap
    finally:
        numba.njit, numba.jit = njit, jit
    return umap


def make_manifold(umap: Mapping[str, Any], seed: int):
    """UMAP with the config's settings. A fixed ``random_state`` makes it deterministic
    (and single-threaded: umap-learn's price for reproducibility). ``n_epochs`` None is
    umap-learn's own choice (200 above 10,000 points, 500 below); its layout is most of
    UMAP's time, in proportion to the epochs."""
    UMAP = _import_umap().UMAP

    return UMAP(n_components=umap["n_components"], n_neighbors=umap["n_neighbors"], min_dist=umap["min_dist"],
                metric=umap["metric"], n_epochs=umap["n_epochs"], random_state=seed, n_jobs=1)


def map_2d(z: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2) a UMAP map of z (N, D) for figures: neighbourhoods kept, so that clusters a
    10-d UMAP + GMM separates are seen apart (a 2-D PCA draws them as one blob)."""
    umap = _import_umap()
    return _fit_umap(umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=seed, n_jobs=1),
                     np.asarray(z, dtype=np.float32))


def make_clusterer(*, k: int, algorithm: str, n_init: int, max_iter: int, seed: int, n: int,
                   covariance_type: str = "full", minibatch_above: int = 100_000):
    """k-means (mini-batch k-means above ``minibatch_above`` samples: full Lloyd passes
    over millions of points cost minutes and give the same clusters) or a Gaussian mixture."""
    if algorithm == "gmm":
        return GaussianMixture(n_components=k, covariance_type=covariance_type, n_init=n_init,
                               max_iter=max_iter, random_state=seed)
    if n > minibatch_above:
        return MiniBatchKMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, batch_size=4096,
                               random_state=seed)
    return KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed)


def make_pipeline(*, k: int, n_init: int, max_iter: int, seed: int, n: int, standardize: bool = False,
                  pca: int | float | None = None, manifold: str = "none", umap: Mapping[str, Any] | None = None,
                  algorithm: str = "kmeans", covariance_type: str = "full",
                  minibatch_above: int = 100_000) -> Pipeline:
    """Optional z-scoring, optional PCA (components, or explained-variance fraction),
    optional UMAP, then the clusterer. ``n`` is the number of samples it will be fitted on."""
    check("cluster.manifold", manifold, MANIFOLDS)
    check("cluster.algorithm", algorithm, ALGORITHMS)
    return Pipeline([
        ("scale", StandardScaler() if standardize else "passthrough"),
        ("pca", PCA(n_components=pca, random_state=seed) if pca is not None else "passthrough"),
        ("manifold", make_manifold(umap, seed) if manifold == "umap" else "passthrough"),
        ("cluster", make_clusterer(k=k, algorithm=algorithm, n_init=n_init, max_iter=max_iter, seed=seed, n=n,
                                   covariance_type=covariance_type, minibatch_above=minibatch_above)),
    ])


class Clustering(NamedTuple):
    labels: np.ndarray       # (M,) int64 cluster ids of x_score
    typicality: np.ndarray   # (M,) float32: how central each point is to its cluster (higher: more)
    pipeline: Pipeline       # fitted
    k_scores: dict[int, float] | None = None  # with select_k: the criterion's value for each k tried




def select_k(xt: np.ndarray, make, k_range: tuple[int, int], criterion: str, seed: int) -> tuple[int, dict]:
    """The k in [lo, hi] whose clusterer (``make(k)``) scores best on xt (N, D) by a label-free
    criterion (silhouette and Calinski-Harabasz: highest; Davies-Bouldin: lowest), judged in
    the space the clusterer sees (after PCA / UMAP). Returns (k, {k: score})."""
    from latentlab.metrics import label_free

    lo, hi = k_range
    if criterion not in SELECT_K:
        raise ConfigError(f"cluster.select_k must be null or one of {list(SELECT_K)}, got {criterion!r}")
    hi = min(hi, len(xt) - 1)
    if lo > hi:
        raise ConfigError(f"cluster.k_range={list(k_range)}: {len(xt)} samples allow at most k={len(xt) - 1}")
    scores = {k: label_free(xt, make(k).fit_predict(xt), seed=seed)[criterion] for k in range(lo, hi + 1)}
    pick = (min if criterion == "davies_bouldin" else max)(scores, key=lambda k: scores[k])
    return pick, scores


def typicality(clusterer, xt: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """How central each point of xt (N, D) is to its own cluster, (N,); comparable within
    a cluster only. A mixture's log-density at the point, or minus the distance to its
    k-means centre. (A mixture's posterior is no measure here: after UMAP it is 1.0 for
    nearly every point, the wrongly placed ones included.)"""
    if hasattr(clusterer, "score_samples"):
        return clusterer.score_samples(xt).astype(np.float32)
    return -clusterer.transform(xt)[np.arange(len(xt)), labels].astype(np.float32)


def assign(pipe: Pipeline, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fitted pipeline's (labels, typicality) for new points x (N, D)."""
    xt = pipe[:-1].transform(x)
    labels = pipe[-1].predict(xt).astype(np.int64)
    return labels, typicality(pipe[-1], xt, labels)


ASSIGN_NEIGHBORS = 10


def assign_by_neighbors(pre: Pipeline, x_fit: np.ndarray, fit_labels: np.ndarray, fit_typicality: np.ndarray,
                        x_score: np.ndarray, fitted: np.ndarray | None, manifold=None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, typicality) of x_score (M, D) from the fitted sample x_fit (S, D): the
    majority label of each point's ``ASSIGN_NEIGHBORS`` nearest sample points in the
    space after ``pre`` (scaling, PCA), and its nearest neighbour's typicality.
    ``fitted``: the rows of x_score that are x_fit (sorted), which keep their own labels.
    ``manifold``: the fitted UMAP, whose NN-descent index of the sample answers the
    queries (measured 6x faster than an exact k-d tree on 300k points, the same first
    neighbour for 98% of them; deterministic); without one, scikit-learn's exact search."""
    rest = np.ones(len(x_score), bool)
    if fitted is not None:
        rest[fitted] = False
    index = getattr(manifold, "_knn_search_index", None)
    k_nn = min(ASSIGN_NEIGHBORS, len(x_fit))
    if index is not None:
        query = lambda q: index.query(q, k=k_nn)[0]  # noqa: E731
    else:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k_nn, n_jobs=-1).fit(pre.transform(x_fit))
        query = lambda q: nn.kneighbors(q, return_distance=False)  # noqa: E731
    k = int(fit_labels.max()) + 1
    labels = np.empty(len(x_score), np.int64)
    conf = np.empty(len(x_score), np.float32)
    todo = np.flatnonzero(rest)
    for start in range(0, len(todo), 100_000):  # bounded memory for millions of points
        rows = todo[start:start + 100_000]
        idx = query(pre.transform(x_score[rows]))
        votes = np.zeros((len(idx), k), np.int32)
        np.add.at(votes, (np.arange(len(idx))[:, None], fit_labels[idx]), 1)
        labels[rows] = votes.argmax(1)  # ties: the lowest cluster id, deterministically
        conf[rows] = fit_typicality[idx[:, 0]]
    if fitted is not None:
        labels[fitted], conf[fitted] = fit_labels, fit_typicality
    return labels, conf


def fit_predict(x_fit: np.ndarray, x_score: np.ndarray | None, name: str, *, max_fit: int | None = None,
                assign_rest: str = "neighbors", **params) -> Clustering:
    """Fit on x_fit (N, D), assign x_score (M, D); prints a progress line with timing.

    ``x_score`` None scores the fitted points themselves (the `all` protocol): the fit's
    own assignments are returned.
    Above ``max_fit`` samples the pipeline is fitted on a seeded sample of that many: a
    UMAP graph over millions of points would cost hours for no better clusters. The
    points outside the sample are then placed by ``assign_rest``: ``neighbors`` (a vote
    of their ``ASSIGN_NEIGHBORS`` nearest fitted points, in the space UMAP receives; the
    sample keeps its own labels) or ``transform`` (UMAP's transform, then the clusterer's
    predict; slower, see bench/scaling.py). Without UMAP every
    point is assigned by the fitted clusterer, which is exact and cheap.
    """
    check("cluster.assign_rest", assign_rest, ASSIGN_REST)
    criterion, k_range = params.pop("select_k", None), params.pop("k_range", None)
    if params.get("k") is None and criterion is None:
        raise ConfigError(f"{name}: k is not set and no select_k criterion chooses it (resolve_k settles both)")
    k = params["k"] if criterion is None else k_range[0]
    if len(x_fit) < k:
        raise ConfigError(f"cluster.k={k} is larger than the {len(x_fit)} samples to cluster")
    pca = params.get("pca")
    if isinstance(pca, int) and pca > min(x_fit.shape):
        raise ConfigError(f"PCA components {pca} for {name} exceed the data's dimension "
                          f"{x_fit.shape[1]} (or sample count {x_fit.shape[0]})")
    same, pick = x_score is None, None
    if same:
        x_score = x_fit
    if max_fit is not None and len(x_fit) > max_fit:
        pick = np.sort(np.random.default_rng(params["seed"]).choice(len(x_fit), size=max_fit, replace=False))
        x_fit = x_fit[pick]
        if not same:
            pick = None  # the scored points are other points: none of them was fitted
        same = False
    steps = [s for s, on in (("standardised", params.get("standardize")), (f"PCA {pca}", pca is not None),
                             ("UMAP", params.get("manifold") == "umap")) if on]
    print(f"  {name}: fitting {' + '.join(steps + [params.get('algorithm', 'kmeans')])} on "
          f"{x_fit.shape[0]}x{x_fit.shape[1]}, k={k} ...", flush=True)
    t = time.perf_counter()
    pipe = make_pipeline(n=len(x_fit), **params)
    k_scores = None
    if criterion is not None:
        # Transform once (UMAP is the expensive part), then try every k on the result.
        xt_fit = pipe[:-1].fit_transform(x_fit)
        opts = {key: params[key] for key in ("algorithm", "n_init", "max_iter", "seed", "covariance_type",
                                             "minibatch_above") if key in params}
        make = lambda kk: make_clusterer(k=kk, **{"algorithm": "kmeans", **opts}, n=len(x_fit))  # noqa: E731
        k, k_scores = select_k(xt_fit, make, tuple(k_range), criterion, params["seed"])
        print(f"  {name}: k={k} by {criterion} over k in {list(k_range)}: "
              + ", ".join(f"{kk}: {v:.3f}" for kk, v in k_scores.items()), flush=True)
        pipe.steps[-1] = ("cluster", make(k))
        last = pipe[-1]
        labels = last.fit_predict(xt_fit).astype(np.int64)
        if same:
            conf = typicality(last, xt_fit, labels)
        elif params.get("manifold") == "umap" and assign_rest == "neighbors":
            labels, conf = assign_by_neighbors(pipe[:-2], x_fit, labels, typicality(last, xt_fit, labels),
                                               x_score, pick, pipe[-2])
        else:
            labels, conf = assign(pipe, x_score)
        print(f"  {name}: {len(labels)} assigned in {time.perf_counter() - t:.1f}s", flush=True)
        return Clustering(labels, conf, pipe, k_scores)
    last = pipe[-1]
    if same:
        # UMAP's fit_transform returns the embedding it built; transform would re-embed.
        xt = _embed_all(pipe[:-1], x_fit)
        labels = last.fit_predict(xt).astype(np.int64)
        conf = typicality(last, xt, labels)
    elif params.get("manifold") == "umap" and assign_rest == "neighbors":
        xt = pipe[:-1].fit_transform(x_fit)
        fit_labels = last.fit_predict(xt).astype(np.int64)
        labels, conf = assign_by_neighbors(pipe[:-2], x_fit, fit_labels, typicality(last, xt, fit_labels),
                                           x_score, pick, pipe[-2])
    else:
        pipe.fit(x_fit)
        labels, conf = assign(pipe, x_score)
    iters = f"{last.n_iter_} iterations" + ("" if getattr(last, "converged_", True) else ", NOT converged")
    print(f"  {name}: {len(labels)} assigned in {time.perf_counter() - t:.1f}s "
          f"({type(last).__name__}, {iters})", flush=True)
    return Clustering(labels, conf, pipe)


def fit_predict_many(x_fit: np.ndarray, x_score: np.ndarray | None,
                     recipes: list[tuple[str, dict[str, Any]]]) -> dict[str, Clustering]:
    """``fit_predict`` of each (name, params) in turn: one worker's share of several recipes."""
    return {name: fit_predict(x_fit, x_score, name, **params) for name, params in recipes}


def pipeline_params(cluster: Mapping[str, Any], seed: int, **fixed: Any) -> dict[str, Any]:
    """The keyword arguments of ``fit_predict`` from the ``cluster`` config node; those given
    in ``fixed`` are not read from it (a stage's cache must not depend on a key it overrides)."""
    keys = ("k", "n_init", "max_iter", "standardize", "pca", "manifold", "umap", "algorithm",
            "covariance_type", "minibatch_above", "max_fit", "assign_rest", "select_k", "k_range")
    return {**{key: cluster[key] for key in keys if key not in fixed}, **fixed, "seed": seed}


def pixels(x: np.ndarray) -> np.ndarray:
    """The raw inputs as flat vectors: uint8 images (N, C, H, W) -> float32 (N, C*H*W) in
    [0, 1]; feature vectors (N, D) (already scaled) as they are."""
    flat = x.reshape(len(x), -1).astype(np.float32)
    return flat / 255.0 if x.dtype == np.uint8 else flat
