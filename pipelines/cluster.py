"""DVC stage `cluster`: optional standardisation and PCA of the latents, then k-means."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--latents", type=Path, required=True, help="latents (.npz)")
    p.add_argument("--out", type=Path, required=True, help="cluster assignments (.npz) to write")
    a = p.parse_args()
    stages.run(stages.cluster, a.latents, a.out)


if __name__ == "__main__":
    main()
