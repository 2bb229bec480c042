"""A USPS-shaped stand-in made from MNIST, for checking the defaults off MNIST's size and frame.

9,298 MNIST images (USPS's count), each its central 20x20 (where MNIST puts the digit)
resized to 16x16, so the digit fills the frame as USPS's do; their labels under "y". Not a
held-out dataset (the same writers), but it has USPS's size and shape, which the defaults
were not chosen on. Writes an .npz for `data=array`:

    LATENTLAB_DATA_MIRROR=../shared/datasets uv run --frozen python bench/mnist16.py /tmp/mnist16.npz
    uv run --frozen latentlab data=array data.path=/tmp/mnist16.npz data.label_key=y seed=100
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image


def main() -> None:
    from latentlab.data import prepare

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the .npz to write")
    p.add_argument("--n", type=int, default=9298, help="how many images (default: USPS's 9,298)")
    p.add_argument("--seed", type=int, default=7, help="which images")
    a = p.parse_args()
    ds = prepare("mnist", mirror=os.environ.get("LATENTLAB_DATA_MIRROR"), cache=None)
    x, y = np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
    idx = np.random.default_rng(a.seed).choice(len(x), a.n, replace=False)
    small = np.stack([np.asarray(Image.fromarray(x[i, 0, 4:24, 4:24]).resize((16, 16), Image.BILINEAR))
                      for i in idx])
    np.savez_compressed(a.out, x=small[:, None], y=y[idx])
    print(f"wrote {a.out}: {small.shape[0]} images of 16x16, classes {np.bincount(y[idx]).tolist()}")


if __name__ == "__main__":
    main()
