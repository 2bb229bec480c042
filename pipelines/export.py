"""DVC stage `export`: one row per sample with its cluster, latent coordinates and anomaly score."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (.npz)")
    p.add_argument("--latents", type=Path, required=True, help="latents and reconstruction errors (.npz)")
    p.add_argument("--assignments", type=Path, required=True, help="the finetune stage's assignments (.npz)")
    p.add_argument("--out", type=Path, required=True, help="the table to write (.csv or .parquet)")
    p.add_argument("--summary", type=Path, required=True, help="rows, clusters, anomaly threshold (.json)")
    a = p.parse_args()
    stages.run(stages.export, a.data, a.latents, a.assignments, a.out, a.summary)


if __name__ == "__main__":
    main()
