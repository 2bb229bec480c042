"""Benchmark: training throughput of the project's Lightning path against a bare PyTorch loop.

Both train the same autoencoder (built from conf/model/<name>.yaml) on the same uint8
images, with the same batch size, optimizer, validation split, threads and seed, for
the same number of epochs; each epoch is a pass over the training split plus one over
the validation split (and the bare loop saves the best weights, as Lightning's
checkpoint callback does). Runs alternate (Lightning, bare, Lightning, ...) so that
the machine's noise hits both alike; the first epoch of every run is a warm-up and is
not counted. Reports median images/s per epoch, their ratio, and the achieved GFLOP/s
(matrix-multiply and convolution FLOPs counted by torch.utils.flop_counter) against a
plain float32 matrix multiply on this machine (the practical limit).

    uv run --frozen python bench/throughput.py                  # mlp and conv, -> bench/results/throughput.json
    uv run --frozen python bench/throughput.py --models mlp --profile   # + the torch.profiler tables

The images are MNIST's (LATENTLAB_DATA_MIRROR or the cache) when available, else
seeded random images of the same shape: the cost of a step does not depend on pixels.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from latentlab import training
from latentlab.config import compose
from latentlab.models import random_affine, to_float
from latentlab.training import LitAutoencoder

ROOT = Path(__file__).resolve().parents[1]


def images(n: int) -> tuple[np.ndarray, str]:
    from latentlab.data import default_cache, load_torchvision, resolve_mirror
    from latentlab.errors import DataError

    try:
        ds = load_torchvision("mnist", resolve_mirror(None), default_cache())
        return ds.x_train[:n], "MNIST"
    except DataError as err:
        print(f"MNIST unavailable ({err}); seeded random images instead")
        return np.random.default_rng(0).integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8), "random"


class EpochClock(pl.Callback):
    """Wall time between consecutive epoch starts (training + validation + checkpoint)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())


def lightning_run(x: np.ndarray, cfg: dict, epochs: int) -> list[float]:
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as tmp:
        training.fit(x, model=cfg["model"], optimizer=cfg["optimizer"],
                     trainer={**cfg["trainer"], "enable_progress_bar": False, "enable_model_summary": False},
                     batch_size=cfg["train"]["batch_size"], max_epochs=epochs, val_fraction=cfg["train"]["val_fraction"],
                     patience=epochs, min_delta=0.0, seed=cfg["seed"], lr_schedule=cfg["train"]["lr_schedule"],
                     augment=cfg["train"]["augment"], workdir=tmp, callbacks=[clock])
    return list(np.diff(clock.starts))


def bare_run(x: np.ndarray, cfg: dict, epochs: int) -> list[float]:
    """The same training as `training.fit`, written as the plain loop a PyTorch user would write."""
    torch.manual_seed(cfg["seed"])
    tr, va = training.split_indices(len(x), cfg["train"]["val_fraction"], cfg["seed"])
    data = torch.from_numpy(np.ascontiguousarray(x))
    xtr, xva = data[tr], data[va]
    lit = LitAutoencoder(model=cfg["model"], optimizer=cfg["optimizer"], input_shape=tuple(x.shape[1:]))
    net = lit.net
    opt = lit._optimizer(net.parameters())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    aug, bs = cfg["train"]["augment"], cfg["train"]["batch_size"]
    best, times = float("inf"), []
    for _ in range(epochs):
        t = time.perf_counter()
        net.train()
        for idx in torch.randperm(len(xtr)).split(bs):
            xb = to_float(xtr[idx])
            if aug and (aug["degrees"] > 0 or aug["translate"] > 0):
                xb = random_affine(xb, aug["degrees"], aug["translate"])
            loss = nn.functional.mse_loss(net(xb), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.inference_mode():
            val = sum(nn.functional.mse_loss(net(xb := to_float(c)), xb, reduction="sum").item()
                      for c in xva.split(max(bs, 1024))) / xva.numel()
        if val < best:
            best = val
            torch.save(net.state_dict(), io.BytesIO())
        times.append(time.perf_counter() - t)
    return times


def flops_per_epoch(x: np.ndarray, cfg: dict) -> float:
    """Matmul/convolution FLOPs of one epoch: forward + backward per training batch, forward per validation batch."""
    lit = LitAutoencoder(model=cfg["model"], optimizer=cfg["optimizer"], input_shape=tuple(x.shape[1:]))
    bs = cfg["train"]["batch_size"]
    xb = to_float(torch.from_numpy(x[:bs]))
    with FlopCounterMode(display=False) as train_fc:
        nn.functional.mse_loss(lit.net(xb), xb).backward()
    with FlopCounterMode(display=False) as val_fc, torch.no_grad():
        lit.net(xb)
    n_val = max(1, int(round(len(x) * cfg["train"]["val_fraction"])))
    return train_fc.get_total_flops() / bs * (len(x) - n_val) + val_fc.get_total_flops() / bs * n_val


def matmul_gflops(n: int = 2048, reps: int = 20) -> float:
    """Median GFLOP/s of a float32 n x n matrix multiply: what this CPU's BLAS does at best."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def profile(x: np.ndarray, cfg: dict, rows: int) -> dict[str, str]:
    """torch.profiler's top operators (by self CPU time) over two epochs of each path."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    tables = {}
    for name, run in (("lightning", lightning_run), ("bare", bare_run)):
        with prof(activities=[ProfilerActivity.CPU]) as p:
            run(x, cfg, 2)
        tables[name] = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return tables


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mlp", "conv"])
    p.add_argument("--n", type=int, default=20_000, help="images (a tenth held out for validation)")
    p.add_argument("--epochs", type=int, default=4, help="per run; the first is a warm-up")
    p.add_argument("--repeats", type=int, default=3, help="runs of each path, alternating")
    p.add_argument("--augment", action="store_true", help="with the default rotation/shift augmentation "
                   "(off by default: it is elementwise work the FLOP count does not see)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="OVERRIDE",
                   help="a Hydra override, e.g. train.batch_size=512 (repeatable)")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler tables of both paths")
    p.add_argument("--tag", help="results file bench/results/throughput-<tag>.json (a variant's run)")
    a = p.parse_args()

    x, source = images(a.n)
    limit = matmul_gflops()
    print(f"{torch.get_num_threads()} threads; float32 2048x2048 matmul: {limit:.1f} GFLOP/s; data: {source} {x.shape}")
    rows = []
    for model in a.models:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(compose([f"model={model}", *a.overrides]), resolve=True)
        if not a.augment:
            cfg["train"]["augment"] = None
        flops = flops_per_epoch(x, cfg)
        epochs = {"lightning": [], "bare": []}
        for r in range(a.repeats):
            for path, run in (("lightning", lightning_run), ("bare", bare_run)):
                t = run(x, cfg, a.epochs)[1:]
                epochs[path] += t
                print(f"  {model} {path} run {r}: {', '.join(f'{s:.2f}' for s in t)} s/epoch", flush=True)
        n_train = len(x) - max(1, int(round(len(x) * cfg["train"]["val_fraction"])))
        row = {"model": model, "batch_size": cfg["train"]["batch_size"], "gflop_per_epoch": flops / 1e9}
        for path, t in epochs.items():
            med = statistics.median(t)
            row[path] = {"epoch_seconds": t, "median_seconds": med, "images_per_s": n_train / med,
                         "gflops": flops / med / 1e9, "fraction_of_matmul": flops / med / 1e9 / limit}
        row["ratio"] = row["lightning"]["images_per_s"] / row["bare"]["images_per_s"]
        rows.append(row)
        if a.profile:
            for path, table in profile(x, cfg, 15).items():
                print(f"\n{model}, {path} path: top operators by self CPU time (2 epochs)\n{table}")
                row.setdefault("profile", {})[path] = table

    result = {"machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "lightning": pl.__version__,
              "data": source, "n": len(x), "epochs": a.epochs, "repeats": a.repeats, "augment": a.augment,
              "overrides": a.overrides, "matmul_gflops": limit, "rows": rows}
    out = ROOT / "bench" / "results" / (f"throughput-{a.tag}.json" if a.tag else "throughput.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nmatmul {limit:.1f} GFLOP/s ({torch.get_num_threads()} threads)\n\n"
          "| model | batch | Lightning img/s | bare img/s | ratio | Lightning GFLOP/s (% of matmul) | bare GFLOP/s (%) |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        L, B = r["lightning"], r["bare"]
        print(f"| {r['model']} | {r['batch_size']} | {L['images_per_s']:.0f} | {B['images_per_s']:.0f} | {r['ratio']:.2f} "
              f"| {L['gflops']:.1f} ({L['fraction_of_matmul']:.0%}) | {B['gflops']:.1f} ({B['fraction_of_matmul']:.0%}) |")
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
