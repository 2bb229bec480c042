"""DVC stage `anomaly_evaluate`: metrics (full and unbalanced test sets), figures, curves, one MLflow run."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--history", type=Path, required=True)
    p.add_argument("--scores", type=Path, required=True)
    p.add_argument("--metrics", type=Path, required=True, help="metrics (.json) to write")
    p.add_argument("--plots", type=Path, required=True, help="folder for the figures")
    p.add_argument("--curves", type=Path, required=True, help="folder for roc.csv and pr.csv")
    a = p.parse_args()
    stages.run(stages.anomaly_evaluate, a.data, a.model, a.history, a.scores, a.metrics, a.plots, a.curves)


if __name__ == "__main__":
    main()
