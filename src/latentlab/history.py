"""The per-epoch losses of a training, as the CSV DVC plots (epoch, train and val loss)."""

from __future__ import annotations

import csv
from pathlib import Path

from latentlab import metric_names as M
from latentlab.files import write_csv


def write(rows: list[dict[str, float]], path: str | Path) -> None:
    write_csv(path, rows, ["epoch", M.TRAIN_LOSS, M.VAL_LOSS])


def read(path: str | Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
