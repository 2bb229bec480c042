"""Benchmark: the cluster step and anomaly scoring against n (10k .. 1M), wall time and peak memory.

Cluster cases run the cluster stage's `fit_predict` on synthetic 10-d latents (a
seeded mixture of 10 Gaussians, beyond MNIST's size where needed) with the config's
settings plus the case's overrides:
  kmeans          `cluster=kmeans` (mini-batch k-means above `cluster.minibatch_above`)
  n2d             the default `cluster=n2d`: UMAP + GMM fitted on at most `cluster.max_fit`
                  (100k) points, the rest placed by a vote of their nearest fitted points
  n2d-transform   the same with `cluster.assign_rest=transform` (UMAP's own transform)
  n2d-fit30k      `cluster.max_fit=30000`: the large-n setting
The anomaly case runs the anomaly_score stage's work with the default `anomaly` config
(an MLP autoencoder's SSIM reconstruction error + latent kNN score): score n synthetic
images with a scorer fitted on 10,000 of them. Each (case, n) runs in its own process,
so peak memory is its own.

    uv run --frozen python bench/scaling.py                  # every case, -> bench/results/scaling.json
    uv run --frozen python bench/scaling.py --cases kmeans n2d --n 10000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def latents(n: int, dim: int = 10, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4.0, size=(k, dim))
    y = rng.integers(0, k, size=n)
    return (centers[y] + rng.normal(0, 1.0, size=(n, dim))).astype(np.float32), y


CASES = {"kmeans": ["cluster=kmeans"], "n2d": ["cluster=n2d"],
         "n2d-transform": ["cluster=n2d", "cluster.assign_rest=transform"],
         "n2d-fit30k": ["cluster=n2d", "cluster.max_fit=30000"], "anomaly": []}


def peak_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def one(case: str, n: int) -> dict:
    """Runs in a child process: time one cluster step on n latents, or scoring n images."""
    from omegaconf import OmegaConf

    from latentlab.config import compose

    cfg = OmegaConf.to_container(compose(CASES[case]), resolve=True)
    if case == "anomaly":
        return {"case": case, "n": n, **anomaly(cfg, n), "peak_gib": peak_gib()}
    from latentlab.clustering import fit_predict, pipeline_params
    from latentlab.metrics import scores

    x, y = latents(n)
    if case.startswith("n2d"):  # numba compiles UMAP (and NN-descent, used above 4096 points) on first use
        fit_predict(x[:6000], None, "warm-up", **pipeline_params(cfg["cluster"], 0))
    t = time.perf_counter()
    labels, *_ = fit_predict(x, None, case, **pipeline_params(cfg["cluster"], 0))
    sec = time.perf_counter() - t
    return {"case": case, "n": n, "seconds": round(sec, 1), "acc": round(scores(y, labels)["acc"], 4),
            "peak_gib": peak_gib()}


def anomaly(cfg: dict, n: int) -> dict:
    """The anomaly_score stage's work on n synthetic images: features (reconstruction
    error + latents) of every image, a scorer fitted on 10,000 of them, every image scored."""
    import torch
    from hydra.utils import instantiate

    from latentlab.anomaly import error_for, features
    from latentlab.anomaly import scorer_for

    torch.manual_seed(0)
    net = instantiate(cfg["model"], input_shape=(1, 28, 28)).eval()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
    fit, val = x[:9_000], x[9_000:10_000]
    t = time.perf_counter()
    with torch.inference_mode():
        f_fit, f_val, f_all = (features(net, part, error_for(cfg["anomaly"]["error"], x.ndim == 4)) for part in (fit, val, x))
    scores = scorer_for(cfg["anomaly"]).fit(f_fit, f_val).score_samples(f_all)
    return {"seconds": round(time.perf_counter() - t, 1), "acc": None, "flagged": round(float(
        (scores > np.quantile(scores[:10_000], 0.99)).mean()), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", nargs="+", type=int, default=[10_000, 70_000, 500_000, 1_000_000])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--transform-n", type=int, nargs="+", default=[200_000],
                   help="n2d-transform only at these n (it is the slow one)")
    p.add_argument("--merge", action="store_true", help="keep the other rows of bench/results/scaling.json")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one(a.child[0], int(a.child[1]))))
        return
    rows = []
    for case in a.cases:
        for n in (a.transform_n if case == "n2d-transform" else a.n):
            r = subprocess.run([sys.executable, __file__, "--child", case, str(n)], capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{case} n={n} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    out = ROOT / "bench" / "results" / "scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.merge and out.exists():  # re-measured (case, n) replace their old rows, the others stay
        fresh = {(r["case"], r["n"]) for r in rows}
        rows = [r for r in json.loads(out.read_text())["rows"] if (r["case"], r["n"]) not in fresh] + rows
    out.write_text(json.dumps({"machine": f"{os.cpu_count()} cores, {platform.machine()}", "rows": rows}, indent=1))
    print("\n| case | n | wall time (s) | peak memory (GiB) | ACC (synthetic) |\n| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['case']} | {r['n']:,} | {r['seconds']} | {r['peak_gib']} | {r['acc'] if r['acc'] is not None else '-'} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
