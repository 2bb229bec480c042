"""Calibration runs on full MNIST: one choice at a time, from the pipeline's own stage functions.

Cheaper than bench/full_mnist.py (no DVC, no clone, no anomaly branch; a trained
autoencoder is reused), for deciding what goes into the defaults. Each command appends
one JSON line to bench/results/calibrate.jsonl. Work files live in --work (default
/tmp/latentlab-calibrate); MNIST comes from LATENTLAB_DATA_MIRROR or the internet.

    # train (or reuse) an autoencoder, embed, cluster with the cluster stage, score
    python bench/calibrate.py cluster orig 0 train.augment.target=original
    # the finetune stage on that autoencoder's clusters, with overrides
    python bench/calibrate.py finetune orig 0 finetune.labels=pixels
    # UMAP's fuzzy-graph intersection of the latents and the pixels' PCA(50), then a GMM
    python bench/calibrate.py graph orig 0
    # share of each point's 20 nearest neighbours with its label: pixels' PCA(50), latents
    python bench/calibrate.py knn orig
    # the dec stage's method (DCEC + DEC-DA's augmentation) from the tag's clusters, scored per update
    python bench/calibrate.py dec conv10 100 cluster=kmeans model.latent_dim=10
    # its raw twin's recipe from the pixels' clusters; --gamma 0: no decoder, no reconstruction term
    python bench/calibrate.py raw_dec pixels 100 cluster=kmeans --maxiter 6000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "calibrate.jsonl"


def _cfg(seed: int, overrides: list[str]) -> dict:
    from omegaconf import OmegaConf

    from latentlab.config import compose, validate

    cfg = OmegaConf.to_container(compose([*overrides, f"seed={seed}", "protocol=all",
                                          "trainer.enable_progress_bar=false"]), resolve=True)
    validate(cfg)
    return cfg


def _data(work: Path, cfg: dict) -> Path:
    from latentlab.stages.download import download

    path = work / "prepared.npz"
    if not path.exists():
        download(cfg, path)
    return path


def _labels(data: Path) -> np.ndarray:
    from latentlab.data import Prepared

    return Prepared.load(data).split("all")[3]  # train then test, as the latents are


def _name(overrides: list[str], *prefixes: str) -> str:
    """A file-name part for the overrides (only those starting with one of ``prefixes``, if given)."""
    kept = [o for o in overrides if not prefixes or o.lstrip("+").startswith(prefixes)]
    return "-".join(o.replace("/", "_") for o in kept) or "default"


def _record(row: dict) -> None:
    print(json.dumps(row), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")


def cluster(work: Path, tag: str, seed: int, overrides: list[str]) -> None:
    from latentlab.stages.cluster import cluster
    from latentlab.stages.embed import embed
    from latentlab.stages.train import train
    from latentlab.metrics import scores

    cfg = _cfg(seed, overrides)
    data, out = _data(work, cfg), work / tag
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not (out / "model.pt").exists():  # a tag names one trained autoencoder
        print(train(cfg, data, out / "model.pt", out / "history.csv"), flush=True)
    train_s = time.perf_counter() - t
    embed(cfg, data, out / "model.pt", out / "latents.npz")
    t = time.perf_counter()
    print(cluster(cfg, out / "latents.npz", out / "cluster.npz"), flush=True)
    with np.load(out / "cluster.npz") as c:
        s = scores(_labels(data), c["autoencoder"])
    _record({"what": "cluster", "tag": tag, "seed": seed, "overrides": overrides, "train_s": round(train_s),
             "cluster_s": round(time.perf_counter() - t), **s})


def finetune(work: Path, tag: str, seed: int, overrides: list[str], twin: bool = True) -> None:
    """autoencoder_selflabel on the tag's autoencoder and clusters, and its raw twin
    raw_selflabel (the same recipe on the pixels' clusters, cached per seed and overrides;
    ``twin=False``: not run, not recorded)."""
    from latentlab.metrics import scores
    from latentlab.stages.baselines import baselines
    from latentlab.stages.finetune import finetune
    from latentlab.stages.raw_selflabel import raw_selflabel

    cfg = _cfg(seed, overrides)
    data, out = _data(work, cfg), work / tag
    # the pixels' clusters: they depend on the cluster config, not on the autoencoder
    base = work / f"baselines-{seed}-{_name(overrides, 'cluster')}.npz"
    if not base.exists():
        print(baselines(cfg, data, base), flush=True)
    name = _name(overrides)
    t = time.perf_counter()
    print(finetune(cfg, data, out / "model.pt", out / "cluster.npz", out / "latents.npz",
                   out / f"finetune-{name}.npz", out / f"classifier-{name}.pt"), flush=True)
    seconds = time.perf_counter() - t
    # the twin depends on the self-labelling recipe, not on the autoencoder's overrides
    path = work / f"raw_selflabel-{seed}-{_name(overrides, 'finetune.', 'cluster')}.npz"
    if twin and not path.exists():
        print(raw_selflabel(cfg, data, base, path), flush=True)
    y = _labels(data)
    with np.load(out / f"finetune-{name}.npz") as f, np.load(out / "cluster.npz") as c, np.load(base) as b:
        tuned, ae, px = f["autoencoder_selflabel"], c["autoencoder"], b["raw_cluster"]
    record = {"what": "finetune", "tag": tag, "seed": seed, "overrides": overrides, "seconds": round(seconds),
              "autoencoder_acc": scores(y, ae)["acc"], "raw_cluster_acc": scores(y, px)["acc"]}
    if twin:
        with np.load(path) as r:
            record["raw_selflabel"] = scores(y, r["raw_selflabel"])
    _record({**record, **scores(y, tuned)})


def graph(work: Path, tag: str, seed: int, overrides: list[str]) -> None:
    from sklearn.decomposition import PCA

    from latentlab.clustering import make_clusterer, make_manifold, pixels
    from latentlab.data import Prepared
    from latentlab.metrics import scores

    cfg = _cfg(seed, overrides)
    c, data = cfg["cluster"], _data(work, cfg)
    _, _, x, y = Prepared.load(data).split("all")
    with np.load(work / tag / "latents.npz") as z:
        lat = np.concatenate([z["z_train"], z["z_test"]])
    t = time.perf_counter()
    xp = PCA(cfg["baselines"]["pca_components"], random_state=seed).fit_transform(pixels(x))
    # umap-learn's fuzzy-set intersection: an edge survives where both views hold it
    both = make_manifold(c["umap"], seed).fit(lat) * make_manifold(c["umap"], seed).fit(xp)
    gm = make_clusterer(k=c["k"], algorithm=c["algorithm"], n_init=c["n_init"], max_iter=c["max_iter"],
                        seed=seed, n=len(lat), covariance_type=c["covariance_type"],
                        minibatch_above=c["minibatch_above"])
    labels = gm.fit_predict(both.embedding_)
    _record({"what": "graph-intersection", "tag": tag, "seed": seed, "overrides": overrides,
             "seconds": round(time.perf_counter() - t), **scores(y, labels)})


def dec(work: Path, tag: str, seed: int, overrides: list[str], *, gamma: float = 0.1, augment: bool = True,
        maxiter: int = 20000) -> None:
    """The `dec` stage's method (latentlab.dec: DCEC with DEC-DA's augmentation) on the tag's
    autoencoder from its cluster-stage clusters, with the config's `dec` section (``maxiter``
    steps, ``gamma``, no augmentation with ``augment=False``), until under dec.tol of the labels
    change. Prints and records every target update's scores."""
    from latentlab import dec as deep
    from latentlab import models
    from latentlab.data import Prepared
    from latentlab.metrics import scores

    cfg = _cfg(seed, overrides)
    data, out = _data(work, cfg), work / tag
    x = Prepared.load(data).split("all")[0]  # train then test, as the labels
    y = _labels(data)
    ae = models.load(out / "model.pt")
    with np.load(out / "cluster.npz") as c:
        init = c["autoencoder"]
    d = {**cfg["dec"], "steps": maxiter, "gamma": gamma}
    if not augment:
        d["augment"] = {"degrees": 0.0, "translate": 0.0}
    t, history = time.perf_counter(), []

    def record(step: int, labels: np.ndarray) -> None:
        history.append({"step": step, "s": round(time.perf_counter() - t), **scores(y, labels)})
        print(history[-1], flush=True)

    result = deep.fit(ae.encoder, x, init, decoder=ae.decoder, seed=seed, on_update=record,
                      **{k: d[k] for k in ("steps", "update", "tol", "gamma", "lr", "batch_size", "augment")})
    _record({"what": "dec", "tag": tag, "seed": seed, "overrides": overrides, "gamma": gamma, "augment": augment,
             "steps": result.steps, "seconds": round(time.perf_counter() - t), "init": scores(y, init),
             "history": [{**h, "changed": c["changed"]} for h, c in zip(history, result.history)],
             **scores(y, result.labels)})


def knn(work: Path, tags: list[str], n: int = 20, sample: int = 5000) -> None:
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    from latentlab.clustering import pixels
    from latentlab.data import Prepared

    cfg = _cfg(0, [])
    _, _, x, y = Prepared.load(_data(work, cfg)).split("all")
    q = np.random.default_rng(0).choice(len(y), min(sample, len(y)), replace=False)

    def share(f: np.ndarray) -> float:
        idx = NearestNeighbors(n_neighbors=n + 1).fit(f).kneighbors(f[q], return_distance=False)[:, 1:]
        return float((y[idx] == y[q, None]).mean())

    feats = {"pixels-pca50": lambda: PCA(50, random_state=0).fit_transform(pixels(x))}
    for tag in tags:
        def latents(tag=tag):
            with np.load(work / tag / "latents.npz") as z:
                return np.concatenate([z["z_train"], z["z_test"]])
        feats[tag] = latents
    for name, make in feats.items():
        f = make()
        _record({"what": "knn", "tag": name, "dims": int(f.shape[1]), "neighbors": n, "same_label": share(f)})


def raw_dec(work: Path, seed: int, overrides: list[str], *, gamma: float = 0.1, maxiter: int = 20000) -> None:
    """raw_dec's recipe (latentlab.dec from the pixels' PCA) from raw_cluster's clusters (the
    baselines of this seed and cluster config, cached), with the pixels' PCA as decoder and the
    reconstruction term when ``gamma`` > 0. Prints and records every target update's scores."""
    from sklearn.decomposition import PCA

    from latentlab import dec as deep
    from latentlab.clustering import pixels
    from latentlab.data import Prepared
    from latentlab.metrics import scores
    from latentlab.stages.baselines import baselines

    cfg = _cfg(seed, overrides)
    data = _data(work, cfg)
    x = Prepared.load(data).split("all")[0]
    y = _labels(data)
    base = work / f"baselines-{seed}-{_name(overrides, 'cluster')}.npz"
    if not base.exists():
        print(baselines(cfg, data, base), flush=True)
    with np.load(base) as b:
        init = b["raw_cluster"]
    pca = PCA(cfg["baselines"]["pca_components"], random_state=seed).fit(pixels(x))
    d = {**cfg["dec"], "steps": maxiter, "gamma": gamma}
    t, history = time.perf_counter(), []

    def record(step: int, labels: np.ndarray) -> None:
        history.append({"step": step, "s": round(time.perf_counter() - t), **scores(y, labels)})
        print(history[-1], flush=True)

    decoder = deep.linear_decoder(pca, x.shape[1:]) if gamma > 0 else None
    result = deep.fit(deep.linear_encoder(pca), x, init, decoder=decoder, seed=seed, on_update=record,
                      **{k: d[k] for k in ("steps", "update", "tol", "gamma", "lr", "batch_size", "augment")})
    _record({"what": "raw_dec", "seed": seed, "overrides": overrides, "gamma": gamma, "steps": result.steps,
             "seconds": round(time.perf_counter() - t), "init": scores(y, init),
             "history": [{**h, "changed": c["changed"]} for h, c in zip(history, result.history)],
             **scores(y, result.labels)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["cluster", "finetune", "graph", "knn", "dec", "raw_dec"])
    p.add_argument("tag", help="names the autoencoder (a folder under --work); knn: a comma-separated list; "
                               "raw_dec: unused (no autoencoder), e.g. pixels")
    p.add_argument("seed", type=int, nargs="?", default=0)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/")
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "latentlab-calibrate")
    p.add_argument("--threads", type=int, help="torch threads (two runs side by side: 1 each)")
    p.add_argument("--from-model", type=Path, help="cluster: start from this trained model.pt instead of training")
    p.add_argument("--no-twin", action="store_true", help="finetune: skip the raw twin (deciding on the autoencoder side)")
    p.add_argument("--gamma", type=float, default=0.1, help="dec: weight of the reconstruction loss")
    p.add_argument("--no-augment", action="store_true", help="dec: DCEC as published, unaugmented")
    p.add_argument("--maxiter", type=int, default=20000, help="dec: most optimizer steps")
    a = p.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.from_model:
        (a.work / a.tag).mkdir(exist_ok=True)
        shutil.copy(a.from_model, a.work / a.tag / "model.pt")
    if a.what == "knn":
        knn(a.work, a.tag.split(","))
    elif a.what == "raw_dec":
        raw_dec(a.work, a.seed, a.overrides, gamma=a.gamma, maxiter=a.maxiter)
    elif a.what == "finetune":
        finetune(a.work, a.tag, a.seed, a.overrides, twin=not a.no_twin)
    elif a.what == "dec":
        dec(a.work, a.tag, a.seed, a.overrides, gamma=a.gamma, augment=not a.no_augment, maxiter=a.maxiter)
    else:
        {"cluster": cluster, "graph": graph}[a.what](a.work, a.tag, a.seed, a.overrides)


if __name__ == "__main__":
    main()
