"""The pipeline's stages as functions of (config, input paths, output paths).

DVC calls each through a thin script in ``pipelines/``; anything else that runs the
pipeline (tests, benchmarks, sweeps) calls the same functions. Each stage writes its
outputs atomically and returns a one-line summary of what it wrote.
"""

from __future__ import annotations

import errno
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
from latentlab.errors import LatentlabError, OutputError


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
                 max_test=d["max_test"], test_fraction=d["test_fraction"], seed=d["split_seed"], source=d)
    ds.save(out)
    what = "images" if ds.is_images else "feature vectors"
    labels = "" if ds.labelled else ", no labels"
    return (f"wrote {out}: {d['name']} {ds.meta['n_train']} train + {ds.meta['n_test']} test {what} "
            f"of shape {tuple(ds.image_shape)}{labels}, sha256 {ds.meta['sha256'][:12]}")


def _fit(cfg: Mapping[str, Any], x: np.ndarray, model_out: Path, history_out: Path, max_epochs: int,
         what: str = "images", augment: Mapping[str, float] | None = None, task: str = "cluster") -> str:
    from latentlab import history, tracking, training
    from latentlab.config import task_model

    tracking.check_server()  # the run is logged at the end: an unreachable server fails now, not then
    t = cfg["train"]
    result = training.fit(x, model=task_model(cfg, task), optimizer=cfg["optimizer"], trainer=cfg["trainer"],
                          batch_size=t["batch_size"], max_epochs=max_epochs,
                          val_fraction=t["val_fraction"], patience=t["patience"],
                          min_delta=t["min_delta"], lr_schedule=t["lr_schedule"], augment=augment,
                          seed=cfg["seed"], workdir=model_out.parent,
                          # Beside the outputs, never one of them: a killed run resumes from here.
                          resume_dir=model_out.parent / ".resume")
    training.save(result, model_out)
    history.write(result.history, history_out)
    procs = f" in {result.world_size} processes" if result.world_size > 1 else ""
    return (f"wrote {model_out} and {history_out}: {len(result.history)} epochs on {len(x)} {what}{procs}, "
            f"best {M.VAL_LOSS} {result.best_val_loss:.5f} at epoch {result.best_epoch}")


def train(cfg: Mapping[str, Any], data: Path, model_out: Path, history_out: Path) -> str:
    from latentlab.data import Prepared

    x_fit, _, _, _ = Prepared.load(data).split(cfg["protocol"])
    c = cfg["cluster"]
    k = c["k"] if c["select_k"] is None else c["k_range"][0]
    if len(x_fit) < k:  # said now, not after the training
        raise LatentlabError(f"cluster.k={k} is larger than the {len(x_fit)} samples to cluster")
    # Augmentation is a clustering aid: the anomaly branch trains on the images as they are.
    return _fit(cfg, x_fit, model_out, history_out, cfg["train"]["max_epochs"],
                "images" if x_fit.ndim == 4 else "feature vectors", augment=cfg["train"]["augment"])


def embed(cfg: Mapping[str, Any], data: Path, model: Path, out: Path) -> str:
    from latentlab import models
    from latentlab.data import Prepared

    ds = Prepared.load(data)
    net = models.load(model)
    z_train, mse_train = models.encode(net, ds.x_train, desc="encoding train")
    z_test, mse_test = models.encode(net, ds.x_test, desc="encoding test")
    _savez(out, z_train=z_train, mse_train=mse_train, z_test=z_test, mse_test=mse_test)
    return (f"wrote {out}: latents {z_train.shape[1]}-d for {len(z_train)} + {len(z_test)} samples, "
            f"mean reconstruction MSE train {mse_train.mean():.5f} / test {mse_test.mean():.5f}")


def _fit_score(cfg: Mapping[str, Any], train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if cfg["protocol"] == "all":
        both = np.concatenate([train, test])
        return both, both
    return train, test


def cluster(cfg: Mapping[str, Any], latents: Path, out: Path) -> str:
    """The autoencoder method: the latents through the configured pipeline
    (standardise, PCA, UMAP: each optional), then k-means or a Gaussian mixture.

    Also writes the fitted points' assignments (under the train_test protocol they are
    not the scored ones) and how central each is to its cluster: the finetune stage
    learns from those.
    """
    from latentlab.clustering import assign, fit_predict, pipeline_params

    with np.load(latents) as z:
        z_fit, z_score = _fit_score(cfg, z["z_train"], z["z_test"])
    labels, typical, pipe, k_scores = fit_predict(z_fit, z_score, M.AUTOENCODER,
                                                  **pipeline_params(cfg["cluster"], cfg["seed"]))
    fit_labels, fit_typical = (labels, typical) if z_fit is z_score else assign(pipe, z_fit)
    k = pipe[-1].n_components if hasattr(pipe[-1], "n_components") else pipe[-1].n_clusters
    _savez(out, **{M.AUTOENCODER: labels, "fit_labels": fit_labels, "fit_typicality": fit_typical, "k": np.array(k)})
    chosen = f" (chosen by {cfg['cluster']['select_k']})" if k_scores else ""
    return f"wrote {out}: {len(labels)} assignments to {k} clusters{chosen}"


def finetune(cfg: Mapping[str, Any], data: Path, model: Path, assignments: Path, latents: Path, out: Path,
             model_out: Path, baselines: Path | None = None) -> str:
    """The finetuned method: a classifier (the encoder + a head, or a fresh CNN) trained on
    the cluster stage's most reliable assignments of the fitted images (judged by their
    latent neighbours; under finetune.labels=consensus only where the pixels' UMAP
    baseline in ``baselines`` agrees; under vote every image, its label split between the
    two where they disagree; under pixels, the default, the pixels' UMAP baseline alone), then
    every scored image relabelled by it."""
    from sklearn.neighbors import NearestNeighbors

    from latentlab import finetune as ft
    from latentlab import models
    from latentlab.data import Prepared

    f = cfg["finetune"]
    x_fit, _, x_score, _ = Prepared.load(data).split(cfg["protocol"])
    with np.load(assignments) as a:
        fit_labels, fit_typical, score_labels = a["fit_labels"], a["fit_typicality"], a[M.AUTOENCODER]
        k = int(a["k"]) if "k" in a.files else cfg["cluster"]["k"]  # cluster.select_k may have chosen it
    neighbors = None
    if f["rounds"] > 0 and f["fraction"] < 1.0:  # with every member used, nothing is ranked
        with np.load(latents) as z:
            z_fit = _fit_score(cfg, z["z_train"], z["z_test"])[0]
        n = min(f["neighbors"], len(z_fit) - 1)
        neighbors = NearestNeighbors(n_neighbors=n + 1).fit(z_fit).kneighbors(z_fit, return_distance=False)[:, 1:]
    candidates = soft = agree = None
    if f["rounds"] > 0 and f["labels"] in ("consensus", "vote", "pixels"):
        if baselines is None:
            raise LatentlabError(f"finetune.labels={f['labels']} needs the baselines stage's assignments (--baselines)")
        with np.load(baselines) as b:
            pixel_labels = b[M.RAW_UMAP if x_score is x_fit else f"fit_{M.RAW_UMAP}"]
        if f["labels"] == "consensus":
            candidates = agree = ft.consensus(fit_labels, pixel_labels)
        elif f["labels"] == "vote":  # every image, hard where the two agree, half-and-half where not
            soft = ft.vote(fit_labels, pixel_labels, k)
            agree = soft.max(1) == 1.0
        else:  # the pixel twin: no autoencoder in the labels at all
            fit_labels, fit_typical, neighbors = pixel_labels, np.zeros(len(pixel_labels), np.float32), None
    ae = models.load(model)
    if f["labels"] == "pixels":
        k = int(pixel_labels.max()) + 1
    result = ft.self_label(ae, x_fit, fit_labels, fit_typical, neighbors=neighbors, k=k,
                           rounds=f["rounds"], epochs=f["epochs"], fraction=f["fraction"], lr=f["lr"],
                           batch_size=f["batch_size"], augment=f["augment"], seed=cfg["seed"],
                           trainer=cfg["trainer"], latent_dim=cfg["model"]["latent_dim"],
                           classifier=f["classifier"], candidates=candidates,
                           label_smoothing=f["label_smoothing"], lr_schedule=f["lr_schedule"],
                           min_steps=f["min_steps"], soft=soft, channels=f["channels"])
    if result.net is None:
        labels = score_labels
    elif x_score is x_fit:
        labels = result.labels
    else:
        labels = ft.predict_proba(result.net, x_score).argmax(1).astype(np.int64)
    ft.save(result, ae_model=model, path=model_out)
    _savez(out, **{M.FINETUNED: labels})
    if result.net is None:
        return f"wrote {out}: finetune.rounds=0, the cluster stage's {len(labels)} assignments unchanged"
    agreed = "" if agree is None else f"AE and pixel clusters agree on {agree.mean():.1%}; "
    rounds = agreed + "; ".join(f"round {r['round']}: {r['n_used']} samples, {r['epochs']} epochs, loss {r['loss']:.3f}, {r['changed']} relabelled"
                       for r in result.rounds)
    return f"wrote {out} and {model_out}: {len(labels)} assignments ({rounds})"


def _in_worker(x_fit: np.ndarray, x_score: np.ndarray | None, recipes: list[tuple[str, dict]]) -> dict:
    """``fit_predict`` of each (name, params) in a worker process; ``x_score`` None scores
    the fitted points (the identity ``fit_predict`` tests does not cross processes)."""
    from latentlab.clustering import fit_predict

    x_score = x_fit if x_score is None else x_score
    return {name: fit_predict(x_fit, x_score, name, **params) for name, params in recipes}


def baselines(cfg: Mapping[str, Any], data: Path, out: Path) -> str:
    """What the autoencoder must beat, on raw pixels: k-means, PCA + k-means, and the
    cluster config's own manifold step (UMAP of the pixels' PCA, then the same clusterer).
    Under train_test also the manifold step's assignments of the fitted images
    (``fit_raw_umap``), for finetune.labels=consensus / vote / pixels.

    The UMAP recipe and the two k-means run in two processes side by side, one thread
    each (joblib's workers): seeded UMAP keeps to one core anyway, so on two cores the
    k-means take the other instead of queueing behind it."""
    from joblib import Parallel, delayed

    from latentlab.clustering import assign, pipeline_params, pixels
    from latentlab.data import Prepared

    ds = Prepared.load(data)
    x_fit, x_score = _fit_score(cfg, pixels(ds.x_train), pixels(ds.x_test))
    c = pipeline_params(cfg["cluster"], cfg["seed"])
    km = {**c, "standardize": False, "pca": None, "manifold": "none", "algorithm": "kmeans"}
    pcs = cfg["baselines"]["pca_components"]
    if pcs > min(x_fit.shape):  # a small table: PCA keeps what there is
        print(f"  baselines.pca_components={pcs} exceeds the data's {min(x_fit.shape)} dimensions/samples: "
              f"using {min(x_fit.shape)}", flush=True)
        pcs = min(x_fit.shape)
    groups = [[(M.RAW_UMAP, {**c, "standardize": False, "pca": pcs, "manifold": "umap"})],
              [(M.RAW_KMEANS, km), (M.RAW_PCA_KMEANS, {**km, "pca": pcs})]]
    rest = None if x_score is x_fit else x_score
    fitted = {name: r for part in Parallel(n_jobs=len(groups))(delayed(_in_worker)(x_fit, rest, g) for g in groups)
              for name, r in part.items()}
    out_labels = {name: fitted[name].labels for name in (M.RAW_KMEANS, M.RAW_PCA_KMEANS, M.RAW_UMAP)}
    extra = {} if rest is None else {f"fit_{M.RAW_UMAP}": assign(fitted[M.RAW_UMAP].pipeline, x_fit)[0]}
    _savez(out, **out_labels, **extra)
    return f"wrote {out}: {len(out_labels[M.RAW_KMEANS])} assignments for {', '.join(out_labels)}"


def export(cfg: Mapping[str, Any], data: Path, latents: Path, finetuned: Path, out: Path, summary_out: Path) -> str:
    """The table users take away (see ``latentlab.export``): one row per scored sample in
    the source file's order, and a summary (the anomaly threshold ``predict`` applies)."""
    from latentlab import export as ex
    from latentlab.data import Prepared

    ds = Prepared.load(data)
    ids, rows = ds.ids(cfg["protocol"])
    _, _, _, y = ds.split(cfg["protocol"])
    with np.load(latents) as z:
        z_fit_mse, mse = _fit_score(cfg, z["mse_train"], z["mse_test"])
        z_score = _fit_score(cfg, z["z_train"], z["z_test"])[1]
    with np.load(finetuned) as f:
        clusters = f[M.FINETUNED]
    if not len(ids) == len(clusters) == len(z_score):
        raise LatentlabError(f"stage outputs disagree: {len(ids)} samples, {len(clusters)} assignments, "
                             f"{len(z_score)} latents; re-run `dvc repro`")
    # The contamination assumption: that fraction of the data the autoencoder learnt from is anomalous.
    thr = ex.threshold(z_fit_mse, cfg["export"]["contamination"])
    classes = ds.meta.get("classes")
    labels = None if not ds.labelled else [classes[i] if classes else str(i) for i in y]
    order = np.argsort(rows, kind="stable")
    df = ex.table(ids, clusters, z_score, mse, thr, labels).iloc[order].reset_index(drop=True)
    ex.write(df, out)
    summary = {"rows": len(df), "clusters": int(df["cluster"].nunique()), "threshold": thr,
               "contamination": cfg["export"]["contamination"], "flagged": int(df["is_anomaly"].sum())}
    _write_json(summary_out, summary)
    return (f"wrote {out} and {summary_out}: {summary['rows']} rows in {summary['clusters']} clusters, "
            f"{summary['flagged']} above the anomaly threshold {thr:.4g}")


def evaluate(cfg: Mapping[str, Any], data: Path, model: Path, history: Path, latents: Path,
             assignments: list[Path], metrics_out: Path, plots_dir: Path,
             run_id: str | None = None, exported: Path | None = None) -> str:
    """Score every method, draw the figures, and log the whole execution as one MLflow run.

    ``run_id``: fill this open run (a sweep job's) instead of creating one. ``exported``:
    the export stage's table, logged as an artifact.
    """
    import torch
    from sklearn.decomposition import PCA

    from latentlab import history as history_file
    from latentlab import metrics, models, plots, tracking
    from latentlab.data import Prepared
    from latentlab.models import to_float

    tracking.check_server()

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

    result: dict[str, Any] = {"protocol": cfg["protocol"], "n_scored": int(len(y)), "labelled": ds.labelled,
                              "recon_mse": float(mse_score.mean())}
    for m in M.METHODS:
        # Label-free quality is judged in the latent space for every method, so that they compare.
        result[m] = {**(metrics.scores(y, labels[m]) if ds.labelled else {}),
                     **metrics.label_free(z_score, labels[m], seed=cfg["seed"]),
                     "n_clusters": int(len(np.unique(labels[m])))}
    hist = history_file.read(history)
    result["train"] = {"epochs": len(hist), "best_val_recon_loss": min(r[M.VAL_LOSS] for r in hist)}
    _write_json(metrics_out, result)

    rng = np.random.default_rng(cfg["seed"])
    pick = rng.choice(len(y), size=min(len(y), cfg["evaluate"]["plot_points"]), replace=False)
    z2 = PCA(n_components=2, random_state=cfg["seed"]).fit_transform(z_score)[pick]
    net = models.load(model)
    shown = x_score[rng.choice(len(x_score), size=min(len(x_score), cfg["evaluate"]["n_images"]), replace=False)]
    with torch.inference_mode():
        originals = to_float(torch.from_numpy(shown))
        recons = net(originals).numpy()
    colour = y[pick] if ds.labelled else labels[M.FINETUNED][pick]
    figures = [
        plots.latent_scatter(z2, colour, labels[M.AUTOENCODER][pick], plots_dir / "latent_pca.png",
                             first="true label" if ds.labelled else "finetuned cluster"),
        plots.loss_curve(hist, plots_dir / "loss_curve.png"),
    ]
    if ds.is_images:
        figures.append(plots.reconstruction_grid(originals.numpy(), recons, plots_dir / "reconstructions.png"))
    for m in M.METHODS if ds.labelled else ():
        s = result[m]
        figures.append(plots.contingency_heatmap(
            metrics.contingency(y, labels[m]), plots_dir / f"contingency_{m}.png",
            f"{m}: ACC {s['acc']:.3f}, NMI {s['nmi']:.3f}"))

    summary = " | ".join(f"{m} ACC {result[m]['acc']:.3f} NMI {result[m]['nmi']:.3f}" if ds.labelled else
                         f"{m} silhouette {result[m]['silhouette']:.3f} DB {result[m]['davies_bouldin']:.3f}"
                         for m in M.METHODS)
    flat = {f"{m}/{k}": v for m in M.METHODS for k, v in result[m].items()}
    flat.update({"recon_mse": result["recon_mse"], "best_val_recon_loss": result["train"]["best_val_recon_loss"],
                 "epochs": result["train"]["epochs"]})
    run_id = tracking.log_run(
        cfg=cfg, run_id=run_id, history=hist, metrics=flat,
        artifacts=[*figures, metrics_out, model, history, *([exported] if exported else [])], model=net,
        example=originals.numpy()[:2],
        tags={"dataset": cfg["data"]["name"], "dataset_sha256": ds.meta.get("sha256", "unknown"),
              "protocol": cfg["protocol"]})
    summary += f" | MLflow run {run_id} at {tracking.tracking_uri()}"
    return f"wrote {metrics_out} and {len(figures)} figures in {plots_dir}: {summary}"


# Anomaly detection: an autoencoder trained on normal data only; its reconstruction
# error (and latent distances) score the held-out test split.

def anomaly_split(cfg: Mapping[str, Any], ds: Any):
    """The protocol's normal training/validation images and labelled test images (the
    whole held-out split), seeded; raises ConfigError before any training."""
    from latentlab.anomaly import make_split

    a = cfg["anomaly"]
    classes = {"one_class": a["normal"], "leave_out": a["anomalous"]}.get(a["protocol"], [])
    return make_split(ds.x_train, ds.y_train, ds.x_test, ds.y_test, protocol=a["protocol"], classes=classes,
                      anomaly_fraction=None, train_contamination=a["train_contamination"],
                      val_fraction=a["val_fraction"], seed=cfg["seed"])


def anomaly_scorer(cfg: Mapping[str, Any]):
    from latentlab.anomaly import AnomalyScorer

    a = cfg["anomaly"]
    return AnomalyScorer(score=a["score"], k=a["k"], threshold=a["threshold"], percentile=a["percentile"],
                         target_fpr=a["target_fpr"])


def anomaly_train(cfg: Mapping[str, Any], data: Path, model_out: Path, history_out: Path) -> str:
    """Fit the autoencoder on the protocol's normal training images only."""
    from latentlab.data import Prepared

    split = anomaly_split(cfg, Prepared.load(data))
    leak = f", {split.n_contaminated} of them anomalies" if split.n_contaminated else ""
    return _fit(cfg, split.x_fit, model_out, history_out, cfg["anomaly"]["max_epochs"],
                f"normal images (classes {split.normal_classes}{leak})", task="anomaly")


def anomaly_score(cfg: Mapping[str, Any], data: Path, model: Path, out: Path) -> str:
    """Fit the scorer on normal training features, set its threshold on validation
    normals, score every held-out test image."""
    from latentlab import models
    from latentlab.anomaly import features
    from latentlab.data import Prepared

    split = anomaly_split(cfg, Prepared.load(data))
    net = models.load(model)
    err = cfg["anomaly"]["error"]
    f_fit, f_val, f_test = (features(net, x, err) for x in (split.x_fit, split.x_val, split.x_test))
    scorer = anomaly_scorer(cfg).fit(f_fit, f_val)
    scores = scorer.score_samples(f_test)
    _savez(out, scores=scores, val_scores=scorer.score_samples(f_val), is_anomaly=split.is_anomaly,
           y=split.y_test, recon_error=f_test[:, 0], threshold=np.array(scorer.threshold_))
    flagged = scores > scorer.threshold_
    known = f"{int((split.is_anomaly == 1).sum())} anomalous" if (split.is_anomaly >= 0).all() else "no labels"
    return (f"wrote {out}: {cfg['anomaly']['score']} scores ({err}) for {len(scores)} test samples "
            f"({known}), threshold {scorer.threshold_:.4g} flags "
            f"{flagged.mean():.1%} of them")


def _curve_rows(x: np.ndarray, y: np.ndarray, names: tuple[str, str], n: int = 400) -> list[dict[str, float]]:
    # A DVC plot of 10,000 points says no more than one of 400 and renders slowly.
    keep = np.unique(np.linspace(0, len(x) - 1, min(n, len(x))).round().astype(int))
    return [{names[0]: round(float(x[i]), 6), names[1]: round(float(y[i]), 6)} for i in keep]


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def anomaly_evaluate(cfg: Mapping[str, Any], data: Path, model: Path, history: Path, scores: Path,
                     metrics_out: Path, plots_dir: Path, curves_dir: Path, run_id: str | None = None) -> str:
    """Metrics on the full test split and on seeded unbalanced draws of it, figures,
    ROC / PR curves for DVC, and one MLflow run in the anomaly experiment."""
    import torch
    from sklearn.metrics import precision_recall_curve, roc_curve

    from latentlab import history as history_file
    from latentlab import models, plots, tracking
    from latentlab.anomaly import UNKNOWN, anomaly_metrics, unbalanced_indices, unbalanced_metrics
    from latentlab.data import Prepared

    tracking.check_server()

    a = cfg["anomaly"]
    with np.load(scores) as f:
        s, val_s, is_anom, y = f["scores"], f["val_scores"], f["is_anomaly"], f["y"]
        thr, recon_error = float(f["threshold"]), f["recon_error"]
    ds = Prepared.load(data)
    split = anomaly_split(cfg, ds)
    if len(split.x_test) != len(s) or not np.array_equal(split.y_test, y):
        raise LatentlabError(f"{scores} does not match the current split ({len(s)} scores, "
                             f"{len(split.x_test)} test images); re-run `dvc repro`")
    known = bool((is_anom != UNKNOWN).all())  # the unsupervised protocol has no truth to score against
    hist = history_file.read(history)
    result: dict[str, Any] = {
        "protocol": a["protocol"], "normal_classes": split.normal_classes, "score": a["score"], "error": a["error"],
        "threshold": thr, "val_flagged": float((val_s > thr).mean()), "n_fit": int(len(split.x_fit)),
        "n_contaminated": split.n_contaminated, "n_test": int(len(s)), "test_flagged": float((s > thr).mean()),
        "train": {"epochs": len(hist), "best_val_recon_loss": min(r[M.VAL_LOSS] for r in hist)},
    }
    if not known:
        return _anomaly_unlabelled(cfg, ds, split, s, thr, hist, result, model, history, metrics_out, plots_dir,
                                   curves_dir, run_id)
    full = anomaly_metrics(is_anom, s, thr, fpr=a["recall_at_fpr"])
    result.update(test=vars(full), test_recon_error={"normal": float(recon_error[is_anom == 0].mean()),
                                                     "anomaly": float(recon_error[is_anom == 1].mean())})
    curves = {f"full test ({full.anomaly_fraction:.0%} anomalies)": (is_anom, s)}
    pr_on = (is_anom, s)
    if a["anomaly_fraction"] is not None:
        result["unbalanced"] = unbalanced_metrics(is_anom, s, thr, fraction=a["anomaly_fraction"],
                                                  draws=a["draws"], seed=cfg["seed"], fpr=a["recall_at_fpr"])
        # The first draw of unbalanced_metrics, drawn again for its curves.
        i = unbalanced_indices(is_anom, a["anomaly_fraction"], np.random.default_rng(cfg["seed"]))
        pr_on = (is_anom[i], s[i])
        curves[f"unbalanced draw ({a['anomaly_fraction']:.0%} anomalies)"] = pr_on
    _write_json(metrics_out, result)

    fpr, tpr, _ = roc_curve(is_anom, s)
    _write_csv(curves_dir / "roc.csv", _curve_rows(fpr, tpr, ("fpr", "tpr")))
    prec, rec, _ = precision_recall_curve(*pr_on)
    _write_csv(curves_dir / "pr.csv", _curve_rows(rec[::-1], prec[::-1], ("recall", "precision")))

    net = models.load(model)
    order = np.argsort(s)
    n = a["n_images"]
    shown = np.concatenate([order[::-1][:n], order[:n]])
    with torch.inference_mode():
        imgs = torch.from_numpy(split.x_test[shown]).float() / 255.0
        recons = net(imgs).numpy()
    label = f"{a['score']} score" + (f" ({a['error']})" if a["score"].startswith("recon") else "")
    figures = [
        plots.score_histogram(s, is_anom, thr, plots_dir / "score_histogram.png", title=label),
        plots.roc_pr_curves(curves, plots_dir / "roc_pr.png"),
        plots.anomaly_extremes(imgs.numpy(), recons, s[shown], is_anom[shown], plots_dir / "extremes.png", n=n),
        plots.loss_curve(hist, plots_dir / "loss_curve.png"),
    ]
    # `fpr` is the setting recall_at_fpr was read at, not a measurement: it stays in metrics.json.
    flat = {f"test/{k}": v for k, v in vars(full).items() if k != "fpr"}
    flat.update({f"unbalanced/{k}": v for k, v in result.get("unbalanced", {}).items() if k != "fpr"})
    flat.update({"threshold": thr, "val_flagged": result["val_flagged"],
                 "best_val_recon_loss": result["train"]["best_val_recon_loss"], "epochs": len(hist)})
    run_id = tracking.log_run(
        cfg=cfg, task="anomaly", run_id=run_id, history=hist, metrics=flat,
        artifacts=[*figures, metrics_out, curves_dir / "roc.csv", curves_dir / "pr.csv", model, history],
        model=net, example=imgs.numpy()[:2],
        tags={"dataset": cfg["data"]["name"], "dataset_sha256": ds.meta.get("sha256", "unknown"),
              "anomaly.protocol": a["protocol"], "anomaly.normal_classes": str(split.normal_classes)})
    ub = result.get("unbalanced")
    summary = (f"test AUROC {full.auroc:.3f} AUPRC {full.auprc:.3f}"
               + (f" | {a['anomaly_fraction']:.0%} anomalies: AUPRC {ub['auprc']:.3f} ± {ub['auprc_std']:.3f}, "
                  f"F1 {ub['f1']:.3f} ± {ub['f1_std']:.3f} over {ub['draws']} draws" if ub else ""))
    return (f"wrote {metrics_out} and {len(figures)} figures in {plots_dir}: {summary} | MLflow run {run_id} "
            f"at {tracking.tracking_uri()}")


def _anomaly_unlabelled(cfg, ds, split, s, thr, hist, result, model, history, metrics_out, plots_dir, curves_dir,
                        run_id) -> str:
    """anomaly_evaluate without labels: how many test samples the threshold flags, the score
    distribution and (for images) the most and least anomalous ones; no ROC/PR to draw."""
    import torch

    from latentlab import plots, models, tracking
    from latentlab.anomaly import UNKNOWN
    from latentlab.models import to_float

    a = cfg["anomaly"]
    _write_json(metrics_out, result)
    for name, cols in (("roc.csv", "fpr,tpr"), ("pr.csv", "recall,precision")):
        tmp = curves_dir / f".{name}.tmp"
        curves_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(cols + "\n")  # no labels, no curve: a header DVC can still read
        os.replace(tmp, curves_dir / name)
    net = models.load(model)
    n = min(a["n_images"], len(s) // 2)
    order = np.argsort(s)
    shown = np.concatenate([order[::-1][:n], order[:n]])
    with torch.inference_mode():
        imgs = to_float(torch.from_numpy(split.x_test[shown]))
        recons = net(imgs).numpy()
    figures = [plots.score_histogram(s, np.zeros(len(s), dtype=np.int64), thr, plots_dir / "score_histogram.png",
                                     title=f"{a['score']} score (no labels: every test sample)"),
               plots.loss_curve(hist, plots_dir / "loss_curve.png")]
    if ds.is_images:
        figures.append(plots.anomaly_extremes(imgs.numpy(), recons, s[shown], np.full(len(shown), UNKNOWN),
                                              plots_dir / "extremes.png", n=n))
    flat = {"threshold": thr, "val_flagged": result["val_flagged"], "test_flagged": result["test_flagged"],
            "best_val_recon_loss": result["train"]["best_val_recon_loss"], "epochs": len(hist)}
    run_id = tracking.log_run(
        cfg=cfg, task="anomaly", run_id=run_id, history=hist, metrics=flat,
        artifacts=[*figures, metrics_out, model, history], model=net, example=imgs.numpy()[:2],
        tags={"dataset": cfg["data"]["name"], "dataset_sha256": ds.meta.get("sha256", "unknown"),
              "anomaly.protocol": a["protocol"]})
    return (f"wrote {metrics_out} and {len(figures)} figures in {plots_dir}: no labels; the threshold flags "
            f"{result['test_flagged']:.1%} of {len(s)} test samples | MLflow run {run_id} at {tracking.tracking_uri()}")


def timed(stage: Callable[..., str], cfg: Mapping[str, Any], *args: Any, **kwargs: Any) -> str:
    """Run one stage and print its summary line with wall time and peak memory."""
    t = time.perf_counter()
    summary = stage(cfg, *args, **kwargs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"[{stage.__name__}] {summary} ({time.perf_counter() - t:.1f}s, peak memory {peak:.2f} GiB)",
          flush=True)
    return summary


def outputs(stage: Callable[..., str], *args: Any, **kwargs: Any) -> list[tuple[str, Path]]:
    """The (parameter, path) pairs a stage writes: parameters named out, *_out or *_dir."""
    import inspect

    bound = inspect.signature(stage).bind_partial(None, *args, **kwargs).arguments
    return [(name, Path(v)) for name, v in bound.items()
            if isinstance(v, (str, Path)) and (name == "out" or name.endswith(("_out", "_dir")))]


def check_writable(stage: Callable[..., str], *args: Any, **kwargs: Any) -> None:
    """Every output folder exists (or can be made) and takes a file, before any work."""
    for name, path in outputs(stage, *args, **kwargs):
        folder = path if name.endswith("_dir") else path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as err:
            raise OutputError(f"cannot write {path} ({name}): {err.strerror or err} in {folder}; "
                              "make the folder writable (or free space) and run again; nothing was run") from None


# What a full disk, a read-only or missing folder look like from Python.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def run(stage: Callable[..., str], *args: Any, params: str | Path = "params.yaml", **kwargs: Any) -> None:
    """Run a stage from the command line on validated ``params.yaml``.

    A user error (bad config, bad data, an output folder it cannot write, a full disk,
    an unreachable tracking server) is one clear line on stderr and exit code 2. Outputs
    are written atomically, so a failed stage leaves none behind.
    """
    from latentlab.config import load_params

    try:
        cfg = load_params(params)
        check_writable(stage, *args, **kwargs)
        timed(stage, cfg, *args, **kwargs)
    except LatentlabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"error: [{stage.__name__}] could not write{where}: {err.strerror or err}. No output of this stage "
              "was left behind (each is written to a temporary file first); free space or fix the folder's "
              "permissions and run again", file=sys.stderr)
        raise SystemExit(2) from None
