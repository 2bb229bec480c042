"""Benchmark: each change the profiles led to, before against after, side by side in one run.

  ssim       anomaly scoring's SSIM: torchmetrics' 11x11 grouped convolution (before)
             against latentlab.anomaly.ssim's two small matrix products (after), same numbers
  config     a stage's config check in a fresh process: with the imports the check used to
             make (torch, Lightning, scikit-learn, through the modules that own the choices)
             against the check alone, which now names its choices in config.py
  model      what a stage that only uses a trained model (embed, export, evaluate, anomaly
             scoring) imports to load it: latentlab.training with Lightning (before) against
             latentlab.models, which no longer needs Lightning (after)
  data       one epoch's batches: a DataLoader over a TensorDataset (256 single-image
             lookups and a collate per batch, before) against the batch sampler the
             training path now uses (one gather per batch)

    uv run --frozen python bench/fixes.py        # -> bench/results/fixes.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def median_time(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ssim_case() -> dict:
    from torchmetrics.functional.image import structural_similarity_index_measure as reference

    from latentlab.anomaly import ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(8192, 1, 28, 28, generator=g)
    b = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    diff = (ssim(b, a) - reference(b, a, data_range=1.0, reduction="none")).abs().max().item()
    return {"what": "SSIM of 8,192 28x28 images", "before": median_time(lambda: reference(b, a, data_range=1.0,
            reduction="none")), "after": median_time(lambda: ssim(b, a)), "note": f"same numbers: max abs difference {diff:.1e}"}


def child(code: str) -> float:
    script = f"import time\nt = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(r.stdout.split()[-1])


def config_case(repeats: int = 5) -> dict:
    check = "from latentlab.config import load_params\nload_params('params.yaml')"
    old = "import latentlab.models, latentlab.finetune, latentlab.clustering, latentlab.anomaly\n" + check
    before = statistics.median(child(old) for _ in range(repeats))
    after = statistics.median(child(check) for _ in range(repeats))
    return {"what": "config check in a fresh process", "before": before, "after": after,
            "note": "the cluster, baselines, export and evaluate stages no longer import torch for it"}


def model_case(repeats: int = 5) -> dict:
    before = statistics.median(child("import latentlab.training") for _ in range(repeats))
    after = statistics.median(child("import latentlab.models") for _ in range(repeats))
    return {"what": "imports to load a trained model in a fresh process", "before": before, "after": after,
            "note": "embed, export, evaluate and anomaly scoring"}


def data_case() -> dict:
    from torch.utils.data import DataLoader, TensorDataset

    from latentlab.training import batches

    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(60_000, 1, 28, 28), dtype=np.uint8))
    torch.manual_seed(0)

    def drain(loader) -> None:
        for (xb,) in loader:
            xb.float()

    old = DataLoader(TensorDataset(x), batch_size=256, shuffle=True)
    return {"what": "one epoch of 60,000 images in batches of 256", "before": median_time(lambda: drain(old)),
            "after": median_time(lambda: drain(batches(x, 256, shuffle=True))), "note": ""}


def main() -> None:
    rows = []
    for case in (ssim_case, config_case, model_case, data_case):
        rows.append(case())
        r = rows[-1]
        print(f"{r['what']}: before {r['before']:.3f} s, after {r['after']:.3f} s "
              f"({r['before'] / r['after']:.1f}x) {r['note']}", flush=True)
    out = ROOT / "bench" / "results" / "fixes.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": f"{os.cpu_count()} cores, {platform.machine()}",
                               "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
