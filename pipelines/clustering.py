"""Benchmark: clustering quality on full MNIST over seeds, beside the published tables.

For each seed: train the autoencoder of the given config (the pipeline's own stage
functions), then cluster its latents with every cluster pipeline (k-means, UMAP +
k-means, UMAP + GMM) and the raw pixels with the same pipelines (k-means, PCA(50) +
k-means, PCA(50) + UMAP + k-means / GMM: `baselines.pca_components`). Raw-pixel rows do not depend on the
autoencoder, so they are computed once per seed and shared between tags
(bench/results/clustering-raw-<dataset>.json). Then the config's own cluster and finetune
stages give the `autoencoder_selflabel` row (the encoder self-labelled on its clusters). Every
number is reported as mean [min, max] over the seeds; each autoencoder row also says by
how much it beats its raw-pixel twin.

    uv run --frozen python bench/clustering.py --seeds 0 1 2                 # the default config
    uv run --frozen python bench/clustering.py --seeds 0 1 2 --tag long train.max_epochs=100
    uv run --frozen python bench/clustering.py --seeds 1 2 --pipelines   # the config's own pipeline only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# name -> cluster-config overrides of the pipeline applied to latents or pixels.
PIPELINES = {
    "kmeans": {"manifold": "none", "algorithm": "kmeans"},
    "umap_kmeans": {"manifold": "umap", "algorithm": "kmeans"},
    "umap_gmm": {"manifold": "umap", "algorithm": "gmm"},
}
# Raw-pixel twin of each autoencoder pipeline: the honest comparison.
TWIN = {"kmeans": "pca_kmeans", "umap_kmeans": "umap_kmeans", "umap_gmm": "umap_gmm",
        # the config's own pipeline (cluster stage) and its self-labelling, for the default `n2d`
        "autoencoder": "umap_gmm", "autoencoder_selflabel": "umap_gmm"}
PUBLISHED = [("AE + k-means (DEC paper's AE)", "0.82-0.88", "0.81"), ("N2D (AE + UMAP + GMM)", "0.979", "0.942"),
             ("ASPC-DA", "0.988", "0.966"), ("PCA(50) + k-means on pixels", "0.53", "0.50")]


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def _score_all(x: np.ndarray, y: np.ndarray, cluster: dict, seed: int, pca: int | None,
               names: list[str]) -> dict:
    from latentlab.clustering import fit_predict, pipeline_params
    from latentlab.metrics import scores

    out = {}
    for name, over in PIPELINES.items():
        if name not in names:
            continue
        if pca is not None and name == "kmeans":
            # Raw pixels: k-means alone and on their PCA (the published baselines).
            for nm, p in (("kmeans", None), ("pca_kmeans", pca)):
                t = time.perf_counter()
                labels, *_ = fit_predict(x, None, nm, **{**pipeline_params(cluster, seed), **over, "pca": p})
                out[nm] = {**scores(y, labels), "seconds": round(time.perf_counter() - t, 1)}
            continue
        t = time.perf_counter()
        labels, *_ = fit_predict(x, None, name, **{**pipeline_params(cluster, seed), **over, "pca": pca})
        out[name] = {**scores(y, labels), "seconds": round(time.perf_counter() - t, 1)}
    return out


def run_seed(cfg: dict, seed: int, work: Path, names: list[str]) -> dict:
    """Train on all 70,000 images (`protocol: all`) with this seed, score the pipelines
    named, then the config's own cluster and finetune stages (the `autoencoder_selflabel` row)."""
    from latentlab.stages.cluster import cluster
    from latentlab.stages.download import download
    from latentlab.stages.embed import embed
    from latentlab.stages.finetune import finetune
    from latentlab.stages.train import train
    from latentlab.metrics import scores

    cfg = {**cfg, "seed": seed}
    data = work / "prepared.npz"
    if not data.exists():
        download(cfg, data)
    t = time.perf_counter()
    print(train(cfg, data, work / f"model-{seed}.pt", work / f"history-{seed}.csv"), flush=True)
    train_s = time.perf_counter() - t
    embed(cfg, data, work / f"model-{seed}.pt", work / f"latents-{seed}.npz")
    with np.load(work / f"latents-{seed}.npz") as z:
        lat = np.concatenate([z["z_train"], z["z_test"]])
        mse = float(np.concatenate([z["mse_train"], z["mse_test"]]).mean())
    from latentlab.data import Prepared

    y = Prepared.load(data).split("all")[3]  # train then test, as the latents are
    # The pipeline the config itself names is the cluster stage's: score it once, there.
    own = next((n for n, o in PIPELINES.items() if all(cfg["cluster"][k] == v for k, v in o.items())), None)
    row = {"seed": seed, "train_seconds": round(train_s, 1), "recon_mse": mse,
           "scores": _score_all(lat, y, cfg["cluster"], seed, pca=None, names=[n for n in names if n != own])}
    assigned, tuned = work / f"cluster-{seed}.npz", work / f"finetune-{seed}.npz"
    t = time.perf_counter()
    print(cluster(cfg, work / f"latents-{seed}.npz", assigned), flush=True)
    with np.load(assigned) as c:
        row["scores"]["autoencoder"] = {**scores(y, c["autoencoder"]), "seconds": round(time.perf_counter() - t, 1)}
    if own in names:
        row["scores"][own] = row["scores"]["autoencoder"]
    t = time.perf_counter()
    print(finetune(cfg, data, work / f"model-{seed}.pt", assigned, work / f"latents-{seed}.npz", tuned,
                   work / f"classifier-{seed}.pt"), flush=True)
    with np.load(tuned) as f:
        row["scores"]["autoencoder_selflabel"] = {**scores(y, f["autoencoder_selflabel"]),
                                                  "seconds": round(time.perf_counter() - t, 1)}
    return row


def raw_seed(cfg: dict, seed: int, work: Path, names: list[str]) -> dict:
    from latentlab.stages.download import download
    from latentlab.clustering import pixels
    from latentlab.data import Prepared

    data = work / "prepared.npz"
    if not data.exists():
        download(cfg, data)
    _, _, x, y = Prepared.load(data).split("all")
    return {"seed": seed, "scores": _score_all(pixels(x), y, cfg["cluster"], seed,
                                               pca=cfg["baselines"]["pca_components"], names=names)}


def _cell(rows: list[dict], name: str, key: str) -> str:
    v = [r["scores"][name][key] for r in rows if name in r["scores"]]
    if not v:
        return "not run"
    return f"{np.mean(v):.3f}" + (f" [{min(v):.3f}, {max(v):.3f}]" if len(v) > 1 else "")


def table(ae: list[dict], raw: list[dict], tag: str, pcs: int) -> str:
    lines = ["| method | seeds | ACC mean [min, max] | NMI mean [min, max] | ACC gain over its raw-pixel twin |",
             "| --- | ---: | --- | --- | --- |"]
    def mean(rows, name):
        v = [r["scores"][name]["acc"] for r in rows if name in r["scores"]]
        return np.mean(v) if v else None

    for name in [*PIPELINES, "autoencoder", "autoencoder_selflabel"]:
        twin = TWIN[name]
        a, b = mean(ae, name), mean(raw, twin)
        if a is None:
            continue
        gain = f"{a - b:+.3f} (vs pixels {twin.replace('_', ' + ')})" if b is not None else ""
        what = {"autoencoder": "AE + the config's cluster pipeline (cluster stage)",
                "autoencoder_selflabel": "the same, the encoder self-labelled (finetune stage)"}.get(name, f"AE + {name.replace('_', ' + ')}")
        lines.append(f"| {tag}: {what} | {len(ae)} | {_cell(ae, name, 'acc')} | {_cell(ae, name, 'nmi')} | {gain} |")
    for name in ("kmeans", "pca_kmeans", "umap_kmeans", "umap_gmm") if raw else ():
        label = {"pca_kmeans": f"PCA({pcs}) + k-means", "umap_kmeans": f"PCA({pcs}) + UMAP + k-means",
                 "umap_gmm": f"PCA({pcs}) + UMAP + GMM", "kmeans": "k-means"}[name]
        lines.append(f"| pixels: {label} | {len(raw)} | {_cell(raw, name, 'acc')} | {_cell(raw, name, 'nmi')} | |")
    for name, acc, nmi in PUBLISHED:
        lines.append(f"| published: {name} | | {acc} | {nmi} | |")
    return "\n".join(lines)


def _load(path: Path, key: str, value) -> list[dict]:
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    return old["rows"] if old.get(key) == value else []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/ (e.g. train.max_epochs=100)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--tag", default="default", help="names the results file")
    p.add_argument("--no-raw", action="store_true", help="skip the raw-pixel rows not yet computed")
    p.add_argument("--pipelines", nargs="*", default=list(PIPELINES), choices=list(PIPELINES),
                   help="the cluster pipelines scored on latents and pixels (all by default; the "
                        "config's own pipeline and its self-labelling are always scored)")
    a = p.parse_args()

    from latentlab.config import compose, validate

    cfg = OmegaConf.to_container(compose(["trainer.enable_progress_bar=false", "protocol=all", *a.overrides]),
                                 resolve=True)
    validate(cfg)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out, raw_out = RESULTS / f"clustering-{a.tag}.json", RESULTS / f"clustering-raw-{cfg['data']['name']}.json"
    # Rows already measured with the same overrides (for pixels: the same data and cluster settings) are
    # kept, for every seed; the table shows the seeds asked for.
    ae = _load(out, "overrides", a.overrides)
    # Pixel rows depend on the data and the cluster settings only.
    raw_key = {"data": {k: v for k, v in cfg["data"].items() if k not in ("mirror", "cache")},
               "cluster": cfg["cluster"], "baselines": cfg["baselines"]}
    raw = _load(raw_out, "key", raw_key)
    meta = {"machine": f"{os.cpu_count()} cores, {platform.machine()}", "commit": _commit()}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="latentlab-bench-") as tmp:
        for seed in a.seeds:
            if seed not in {r["seed"] for r in ae}:
                ae.append(run_seed(cfg, seed, Path(tmp), a.pipelines))
                out.write_text(json.dumps({**meta, "overrides": a.overrides, "rows": ae}, indent=1) + "\n")
            if not a.no_raw and seed not in {r["seed"] for r in raw}:
                raw.append(raw_seed(cfg, seed, Path(tmp), a.pipelines))
                raw_out.write_text(json.dumps({**meta, "key": raw_key, "rows": raw}, indent=1) + "\n")
            r = next(r for r in ae if r["seed"] == seed)
            print(f"seed {seed}: " + ", ".join(f"{k} ACC {v['acc']:.3f} NMI {v['nmi']:.3f}"
                                              for k, v in r["scores"].items()), flush=True)
    shown = lambda rows: sorted((r for r in rows if r["seed"] in a.seeds), key=lambda r: r["seed"])  # noqa: E731
    print(f"\n{table(shown(ae), shown(raw), a.tag, cfg['baselines']['pca_components'])}\n\nwrote {out} "
          f"({time.perf_counter() - t0:.0f}s, commit {meta['commit']}, overrides {a.overrides})")


if __name__ == "__main__":
    main()
