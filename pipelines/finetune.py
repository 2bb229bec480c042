"""DVC stage `finetune`: self-label a classifier on the cluster stage's confident assignments."""

import argparse
from pathlib import Path

from latentlab import stages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (.npz)")
    p.add_argument("--model", type=Path, required=True, help="trained autoencoder (.pt)")
    p.add_argument("--assignments", type=Path, required=True, help="the cluster stage's assignments (.npz)")
    p.add_argument("--latents", type=Path, required=True, help="latents (.npz), for each image's neighbours")
    p.add_argument("--out", type=Path, required=True, help="fine-tuned assignments (.npz) to write")
    p.add_argument("--classifier", type=Path, required=True, help="fine-tuned encoder + head (.pt) to write")
    p.add_argument("--baselines", type=Path, help="the baselines stage's assignments (.npz), for finetune.labels=consensus, vote or pixels")
    a = p.parse_args()
    stages.run(stages.finetune, a.data, a.model, a.assignments, a.latents, a.out, a.classifier, a.baselines)


if __name__ == "__main__":
    main()
