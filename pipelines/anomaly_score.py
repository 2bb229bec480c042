"""DVC stage `anomaly_score`: fit the scorer on normal data, set its threshold, score the test split."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (.npz)")
    p.add_argument("--model", type=Path, required=True, help="checkpoint of the normal-data autoencoder")
    p.add_argument("--out", type=Path, required=True, help="scores (.npz) to write")
    a = p.parse_args()
    stages.run(stages.anomaly_score, a.data, a.model, a.out)


if __name__ == "__main__":
    main()
