"""DVC stage `evaluate`: score every method, draw the figures, log the execution as one MLflow run."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--history", type=Path, required=True)
    p.add_argument("--latents", type=Path, required=True)
    p.add_argument("--assignments", type=Path, nargs="+", required=True)
    p.add_argument("--metrics", type=Path, required=True, help="metrics (.json) to write")
    p.add_argument("--plots", type=Path, required=True, help="folder for the figures")
    p.add_argument("--exported", type=Path, help="the export stage's table, logged as an artifact")
    a = p.parse_args()
    stages.run(stages.evaluate, a.data, a.model, a.history, a.latents, a.assignments, a.metrics, a.plots,
               exported=a.exported)


if __name__ == "__main__":
    main()
