"""Benchmark: the cluster step's wall time and peak memory against the number of latents.

Synthetic 10-d latents (a seeded mixture of 10 Gaussians, beyond MNIST's size where
needed), clustered by the pipelines the cluster stage runs: `cluster=kmeans` (full
k-means, mini-batch above `cluster.minibatch_above`) and `cluster=n2d` (UMAP fitted on
at most `cluster.max_fit` points, the rest placed by UMAP's transform, then a GMM).
Each (pipeline, n) runs in its own process so that peak memory is its own.

    uv run --frozen python bench/cluster_scaling.py                          # 10k .. 1M
    uv run --frozen python bench/cluster_scaling.py --n 10000 70000 --pipelines kmeans
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


def one(pipeline: str, n: int) -> dict:
    """Runs in a child process: time one cluster step on n latents."""
    from omegaconf import OmegaConf

    from latentlab.clustering import fit_predict, pipeline_params
    from latentlab.config import compose
    from latentlab.metrics import scores

    cfg = OmegaConf.to_container(compose([f"cluster={pipeline}"]), resolve=True)
    x, y = latents(n)
    if pipeline == "n2d":  # numba compiles UMAP (and NN-descent, used above 4096 points) on first use
        fit_predict(x[:6000], x[:6000], "warm-up", **pipeline_params(cfg["cluster"], 0))
    t = time.perf_counter()
    labels, *_ = fit_predict(x, x, pipeline, **pipeline_params(cfg["cluster"], 0))
    sec = time.perf_counter() - t
    s = scores(y, labels)
    return {"pipeline": pipeline, "n": n, "seconds": round(sec, 1), "acc": round(s["acc"], 4),
            "peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", nargs="+", type=int, default=[10_000, 70_000, 500_000, 1_000_000])
    p.add_argument("--pipelines", nargs="+", default=["kmeans", "n2d"])
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one(a.child[0], int(a.child[1]))))
        return
    rows = []
    for pipe in a.pipelines:
        for n in a.n:
            r = subprocess.run([sys.executable, __file__, "--child", pipe, str(n)], capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{pipe} n={n} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    out = ROOT / "bench" / "results" / "cluster_scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": f"{os.cpu_count()} cores, {platform.machine()}", "rows": rows}, indent=1))
    print("\n| pipeline | n latents (10-d) | wall time (s) | peak memory (GiB) | ACC (synthetic) |\n| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['pipeline']} | {r['n']:,} | {r['seconds']} | {r['peak_gib']} | {r['acc']} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
