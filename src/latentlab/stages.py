"""The pipeline's stages as functions of (config, input paths, output paths).

DVC calls each through a thin script in ``pipelines/``; anything else that runs the
pipeline (tests, benchmarks, sweeps) calls the same functions. Each stage writes its
outputs atomically and returns a one-line summary of what it wrote.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import metric_names as M
from latentlab.errors import LatentlabError


def _savez(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp.npz", delete=False) as f:
        tmp = Path(f.name)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def download(cfg: Mapping[str, Any], out: Path) -> str:
    from latentlab.data import prepare

    d = cfg["data"]
    ds = prepare(d["name"], mirror=d["mirror"], cache=d["cache"], max_train=d["max_train"],
                 max_test=d["max_test"], test_fraction=d["test_fraction"], seed=d["split_seed"])
    ds.save(out)
    return (f"wrote {out}: {d['name']} {ds.meta['n_train']} train + {ds.meta['n_test']} test images "
            f"of shape {tuple(ds.image_shape)}, sha256 {ds.meta['sha256'][:12]}")


def train(cfg: Mapping[str, Any], data: Path, model_out: Path, history_out: Path) -> str:
    from latentlab import training
    from latentlab.data import Prepared

    x_fit, _, _, _ = Prepared.load(data).split(cfg["protocol"])
    t = cfg["train"]
    result = training.fit(x_fit, model=cfg["model"], optimizer=cfg["optimizer"], trainer=cfg["trainer"],
                          batch_size=t["batch_size"], max_epochs=t["max_epochs"],
                          val_fraction=t["val_fraction"], patience=t["patience"],
                          min_delta=t["min_delta"], lr_schedule=t["lr_schedule"], seed=cfg["seed"],
                          workdir=model_out.parent)
    training.save(result, model_out)
    training.write_history(result.history, history_out)
    procs = f" in {result.world_size} processes" if result.world_size > 1 else ""
    return (f"wrote {model_out} and {history_out}: {len(result.history)} epochs on {len(x_fit)} images{procs}, "
            f"best {M.VAL_LOSS} {result.best_val_loss:.5f} at epoch {result.best_epoch}")


def embed(cfg: Mapping[str, Any], data: Path, model: Path, out: Path) -> str:
    from latentlab import training
    from latentlab.data import Prepared

    ds = Prepared.load(data)
    net = training.load(model)
    z_train, mse_train = training.encode(net, ds.x_train, desc="encoding train")
    z_test, mse_test = training.encode(net, ds.x_test, desc="encoding test")
    _savez(out, z_train=z_train, mse_train=mse_train, z_test=z_test, mse_test=mse_test)
    return (f"wrote {out}: latents {z_train.shape[1]}-d for {len(z_train)} + {len(z_test)} images, "
            f"mean reconstruction MSE train {mse_train.mean():.5f} / test {mse_test.mean():.5f}")


def _fit_score(cfg: Mapping[str, Any], train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if cfg["protocol"] == "all":
        both = np.concatenate([train, test])
        return both, both
    return train, test


def _kmeans_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    c = cfg["cluster"]
    return {"k": c["k"], "n_init": c["n_init"], "max_iter": c["max_iter"], "seed": cfg["seed"]}


def cluster(cfg: Mapping[str, Any], latents: Path, out: Path) -> str:
    """The autoencoder method: (standardise, PCA of) the latents, then k-means."""
    from latentlab.clustering import fit_predict

    with np.load(latents) as z:
        z_fit, z_score = _fit_score(cfg, z["z_train"], z["z_test"])
    c = cfg["cluster"]
    labels, pipe = fit_predict(z_fit, z_score, M.AUTOENCODER, standardize=c["standardize"], pca=c["pca"],
                               **_kmeans_params(cfg))
    _savez(out, **{M.AUTOENCODER: labels})
    return f"wrote {out}: {len(labels)} assignments to {c['k']} clusters, inertia {pipe[-1].inertia_:.4g}"


def baselines(cfg: Mapping[str, Any], data: Path, out: Path) -> str:
    """What the autoencoder must beat: k-means, and PCA + k-means, on raw pixels."""
    from latentlab.clustering import fit_predict, pixels
    from latentlab.data import Prepared

    ds = Prepared.load(data)
    x_fit, x_score = _fit_score(cfg, pixels(ds.x_train), pixels(ds.x_test))
    km = _kmeans_params(cfg)
    raw, _ = fit_predict(x_fit, x_score, M.RAW_KMEANS, **km)
    pca, _ = fit_predict(x_fit, x_score, M.RAW_PCA_KMEANS, pca=cfg["baselines"]["pca_components"], **km)
    _savez(out, **{M.RAW_KMEANS: raw, M.RAW_PCA_KMEANS: pca})
    return f"wrote {out}: {len(raw)} assignments for {M.RAW_KMEANS} and {M.RAW_PCA_KMEANS}"


def evaluate(cfg: Mapping[str, Any], data: Path, model: Path, history: Path, latents: Path,
             assignments: list[Path], metrics_out: Path, plots_dir: Path,
             run_id: str | None = None) -> str:
    """Score every method, draw the figures, and log the whole execution as one MLflow run.

    ``run_id``: fill this open run (a sweep job's) instead of creating one.
    """
    import torch
    from sklearn.decomposition import PCA

    from latentlab import metrics, plots, training, tracking
    from latentlab.data import Prepared

    ds = Prepared.load(data)
    _, _, x_score, y = ds.split(cfg["protocol"])
    labels: dict[str, np.ndarray] = {}
    for path in assignments:
        with np.load(path) as a:
            labels.update({k: a[k] for k in a.files})
    missing = [m for m in M.METHODS if m not in labels]
    if missing:
        raise LatentlabError(f"assignments for {missing} not found in {[str(p) for p in assignments]}")
    with np.load(latents) as z:
        z_score = _fit_score(cfg, z["z_train"], z["z_test"])[1]
        mse_score = _fit_score(cfg, z["mse_train"], z["mse_test"])[1]
    if len(y) != len(labels[M.AUTOENCODER]) or len(y) != len(z_score):
        raise LatentlabError(f"stage outputs disagree: {len(y)} labels, {len(z_score)} latents, "
                             f"{len(labels[M.AUTOENCODER])} assignments; re-run `dvc repro`")

    result: dict[str, Any] = {"protocol": cfg["protocol"], "n_scored": int(len(y)),
                              "recon_mse": float(mse_score.mean())}
    for m in M.METHODS:
        result[m] = metrics.scores(y, labels[m])
    hist = training.read_history(history)
    result["train"] = {"epochs": len(hist), "best_val_recon_loss": min(r[M.VAL_LOSS] for r in hist)}
    _write_json(metrics_out, result)

    rng = np.random.default_rng(cfg["seed"])
    pick = rng.choice(len(y), size=min(len(y), cfg["evaluate"]["plot_points"]), replace=False)
    z2 = PCA(n_components=2, random_state=cfg["seed"]).fit_transform(z_score)[pick]
    net = training.load(model)
    shown = x_score[rng.choice(len(x_score), size=cfg["evaluate"]["n_images"], replace=False)]
    with torch.inference_mode():
        originals = torch.from_numpy(shown).float() / 255.0
        recons = net(originals).numpy()
    figures = [
        plots.latent_scatter(z2, y[pick], labels[M.AUTOENCODER][pick], plots_dir / "latent_pca.png"),
        plots.reconstruction_grid(originals.numpy(), recons, plots_dir / "reconstructions.png"),
        plots.loss_curve(hist, plots_dir / "loss_curve.png"),
    ]
    for m in M.METHODS:
        s = result[m]
        figures.append(plots.contingency_heatmap(
            metrics.contingency(y, labels[m]), plots_dir / f"contingency_{m}.png",
            f"{m}: ACC {s['acc']:.3f}, NMI {s['nmi']:.3f}"))

    summary = " | ".join(f"{m} ACC {result[m]['acc']:.3f} NMI {result[m]['nmi']:.3f}" for m in M.METHODS)
    flat = {f"{m}/{k}": v for m in M.METHODS for k, v in result[m].items()}
    flat.update({"recon_mse": result["recon_mse"], "best_val_recon_loss": result["train"]["best_val_recon_loss"],
                 "epochs": result["train"]["epochs"]})
    run_id = tracking.log_run(
        cfg=cfg, run_id=run_id, history=hist, metrics=flat,
        artifacts=[*figures, metrics_out, model, history], model=net, example=originals.numpy()[:2],
        tags={"dataset": cfg["data"]["name"], "dataset_sha256": ds.meta.get("sha256", "unknown"),
              "protocol": cfg["protocol"]})
    summary += f" | MLflow run {run_id} at {tracking.tracking_uri()}"
    return f"wrote {metrics_out} and {len(figures)} figures in {plots_dir}: {summary}"


def timed(stage: Callable[..., str], cfg: Mapping[str, Any], *args: Any, **kwargs: Any) -> str:
    """Run one stage and print its summary line with wall time and peak memory."""
    t = time.perf_counter()
    summary = stage(cfg, *args, **kwargs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"[{stage.__name__}] {summary} ({time.perf_counter() - t:.1f}s, peak memory {peak:.2f} GiB)",
          flush=True)
    return summary


def run(stage: Callable[..., str], *args: Any, params: str | Path = "params.yaml", **kwargs: Any) -> None:
    """Run a stage from the command line on validated ``params.yaml``.

    A user error (bad config, bad data) is one clear line on stderr and exit code 2.
    """
    from latentlab.config import load_params

    try:
        timed(stage, load_params(params), *args, **kwargs)
    except LatentlabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
