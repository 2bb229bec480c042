"""DVC stage `anomaly_train`: fit the autoencoder on the protocol's normal training images only."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (.npz)")
    p.add_argument("--model", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--history", type=Path, required=True, help="per-epoch losses (.csv) to write")
    a = p.parse_args()
    stages.run(stages.anomaly_train, a.data, a.model, a.history)


if __name__ == "__main__":
    main()
