"""The per-epoch losses of a training, as the CSV DVC plots (epoch, train and val loss)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from latentlab import metric_names as M


def write(rows: list[dict[str, float]], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", M.TRAIN_LOSS, M.VAL_LOSS])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read(path: str | Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
