"""DVC stage `baselines`: k-means and PCA + k-means on raw pixels, what the autoencoder must beat."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (.npz)")
    p.add_argument("--out", type=Path, required=True, help="cluster assignments (.npz) to write")
    a = p.parse_args()
    stages.run(stages.baselines, a.data, a.out)


if __name__ == "__main__":
    main()
