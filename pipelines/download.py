"""DVC stage `download`: obtain and verify the dataset in params `data`, write one prepared .npz."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="prepared dataset (.npz)")
    a = p.parse_args()
    stages.run(stages.download, a.out)


if __name__ == "__main__":
    main()
