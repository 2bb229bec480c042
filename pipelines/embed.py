"""DVC stage `embed`: encode train and test images; store latents and per-sample reconstruction MSE."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (.npz)")
    p.add_argument("--model", type=Path, required=True, help="trained checkpoint")
    p.add_argument("--out", type=Path, required=True, help="latents (.npz) to write")
    a = p.parse_args()
    stages.run(stages.embed, a.data, a.model, a.out)


if __name__ == "__main__":
    main()
