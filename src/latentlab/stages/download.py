"""Stage `download`: obtain, verify and prepare the dataset as one ``.npz``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from latentlab.config import anomaly_plan
from latentlab.data import prepare
from latentlab.stages.common import main


def download(cfg: Mapping[str, Any], out: Path) -> str:
    """Obtain the configured dataset (a mirror, the cache, or the official sources), verify it
    and write the prepared samples, labels, ids and train/test split to ``out``."""
    d = cfg["data"]
    ds = prepare(d["name"], mirror=d["mirror"], cache=d["cache"], max_train=d["max_train"],
                 max_test=d["max_test"], test_fraction=d["test_fraction"], seed=d["split_seed"], source=d)
    # the anomaly branch's classes are checked against the labels now, not after the clustering branch's work
    plan = anomaly_plan(cfg["anomaly"], ds.y_train, ds.meta.get("classes"))
    ds.save(out)
    print(f"  anomaly branch: {plan.why}", flush=True)
    what = "images" if ds.is_images else "feature vectors"
    labels = "" if ds.labelled else ", no labels"
    return (f"wrote {out}: {d['name']} {ds.meta['n_train']} train + {ds.meta['n_test']} test {what} "
            f"of shape {tuple(ds.image_shape)}{labels}, sha256 {ds.meta['sha256'][:12]}")


if __name__ == "__main__":  # DVC: python -m latentlab.stages.download --help
    main(download)
