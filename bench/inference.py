"""Benchmark: the self-labelling's relabelling (``finetune.predict_proba``), channels-last in
small batches against the default layout in large ones, on both classifiers it runs.

Each relabelling round passes every image through the classifier ``finetune.views`` times,
in both stages (``finetune``: the conv autoencoder's encoder + a head; ``raw_selflabel``:
a fresh CNN), so its speed is a cost the default pays 2 x rounds x views times. Each net
is first trained for one epoch on MNIST's labels (so that its argmax means something), then
the two layouts run alternately, ``--repeats`` times each; reported: the median seconds per
view of all the images, the ratio, and how far the two layouts' outputs differ (max |dp|,
labels that change).

    uv run --frozen python bench/inference.py            # -> bench/results/inference.json
    uv run --frozen python bench/inference.py --n 70000  # all of MNIST, as the pipeline does

The images are MNIST's (LATENTLAB_DATA_MIRROR or the cache) when available, else seeded
random images of the same shape (then the labels, and the agreement, mean little).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from latentlab import finetune as ft
from latentlab.config import compose
from latentlab.models import to_float
from latentlab.training import LitAutoencoder

ROOT = Path(__file__).resolve().parents[1]


def mnist(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    from latentlab.data import default_cache, load_torchvision, resolve_mirror
    from latentlab.errors import DataError

    try:
        ds = load_torchvision("mnist", resolve_mirror(None), default_cache())
        x = np.concatenate([ds.x_train, ds.x_test])[:n]
        return x, np.concatenate([ds.y_train, ds.y_test])[:n].astype(np.int64), "MNIST"
    except DataError as err:
        print(f"MNIST unavailable ({err}); seeded random images instead")
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, n), "random"


def warm_up(net: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> nn.Module:
    """One supervised epoch (Adam), so that the net's outputs are a trained classifier's."""
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net.train()
    data, labels = torch.from_numpy(x), torch.from_numpy(y)
    for idx in torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(batch_size):
        loss = nn.functional.cross_entropy(net(to_float(data[idx])), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="images relabelled (MNIST's train then test images)")
    p.add_argument("--views", type=int, default=2, help="views per timed call (the first is the image itself)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each layout, alternating")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="OVERRIDE",
                   help="a Hydra override, e.g. model.channels=[32,64,128] (repeatable)")
    p.add_argument("--tag", help="results file bench/results/inference-<tag>.json")
    a = p.parse_args()

    cfg = OmegaConf.to_container(compose(a.overrides), resolve=True)
    x, y, source = mnist(a.n)
    fit = slice(0, min(len(x), 10_000))
    ae = LitAutoencoder(model=cfg["model"], optimizer=cfg["optimizer"], input_shape=tuple(x.shape[1:])).net
    nets = {"finetune (encoder + head)": ft.encoder_classifier(ae, cfg["model"]["latent_dim"], 10, seed=0),
            "raw_selflabel (fresh CNN)": ft.fresh_classifier(tuple(x.shape[1:]), 10, seed=0,
                                                             channels=cfg["finetune"]["channels"])}
    paths = {"default layout, batch 2048": {"channels_last": False, "batch_size": 2048},
             "channels-last, batch 256": {"channels_last": True, "batch_size": 256}}
    kw = {"views": a.views, "augment": cfg["finetune"]["augment"], "seed": 0}
    print(f"{torch.get_num_threads()} threads; data: {source} {x.shape}; {a.views} views a call")
    rows = []
    for name, net in nets.items():
        warm_up(net, x[fit], y[fit])
        times: dict[str, list[float]] = {path: [] for path in paths}
        out = {}
        for r in range(a.repeats):
            for path, args in paths.items():
                t = time.perf_counter()
                out[path] = ft.predict_proba(net, x, **args, **kw)
                times[path].append((time.perf_counter() - t) / a.views)
                print(f"  {name}, {path}, run {r}: {times[path][-1]:.2f} s a view", flush=True)
        old, new = (out[path] for path in paths)
        row = {"net": name, "seconds_per_view": times,
               "median": {path: statistics.median(t) for path, t in times.items()},
               "max_abs_dp": float(np.abs(old - new).max()),
               "labels_changed": int((old.argmax(1) != new.argmax(1)).sum()),
               "accuracy": float((new.argmax(1) == y).mean())}
        row["speedup"] = row["median"][next(iter(paths))] / row["median"][list(paths)[1]]
        rows.append(row)

    result = {"machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "data": source, "n": len(x),
              "views": a.views, "repeats": a.repeats, "overrides": a.overrides, "rows": rows}
    out_file = ROOT / "bench" / "results" / (f"inference-{a.tag}.json" if a.tag else "inference.json")
    out_file.parent.mkdir(exist_ok=True)
    out_file.write_text(json.dumps(result, indent=2))
    print(f"\nmedian seconds per view of {len(x)} images ({torch.get_num_threads()} threads)\n\n"
          f"| net | {' | '.join(paths)} | speed-up | max abs dp | labels changed |\n"
          f"| --- |{' ---: |' * (len(paths) + 3)}")
    for r in rows:
        print(f"| {r['net']} | {' | '.join(f'{s:.2f}' for s in r['median'].values())} | {r['speedup']:.2f}x "
              f"| {r['max_abs_dp']:.1e} | {r['labels_changed']} of {len(x)} |")
    print(f"-> {out_file.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
