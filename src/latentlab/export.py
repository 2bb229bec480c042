"""What users take away: one table row per input sample, and the same table for new data.

The table (CSV or Parquet) has the sample's ``id``, its ``cluster`` (by ``export.method``: the
default's best autoencoder method, ``autoencoder_selflabel`` (the encoder trained on its own
clusters), or ``autoencoder_dec`` (the k-means preset's)), its latent coordinates ``z0..z{d-1}``
(the autoencoder's code as trained, before either method trained its encoder further), its
``anomaly_score`` (the clustering autoencoder's reconstruction MSE: high = unlike the
data it learnt) and ``is_anomaly`` (the score above the threshold that flags
``export.contamination`` of the fitted samples: the stated contamination assumption),
and its ``label`` when the data has labels.

``predict`` applies a trained pipeline to a new file read exactly as the training file
was (the same columns, the stored scaling): on the training rows it reproduces the
pipeline's own table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab.errors import ConfigError, DataError
from latentlab.files import atomic

FORMATS = ("csv", "parquet")


def threshold(scores: np.ndarray, contamination: float) -> float:
    """The score above which ``contamination`` of ``scores`` (N,) lie."""
    if not 0.0 < contamination < 0.5:
        raise ConfigError(f"export.contamination must be in (0, 0.5), got {contamination!r}")
    return float(np.quantile(scores, 1.0 - contamination))


def table(ids: np.ndarray, clusters: np.ndarray, z: np.ndarray, score: np.ndarray, thr: float,
          labels: list[str] | None = None):
    """A DataFrame, one row per sample: ids (N,), clusters (N,), z (N, d), score (N,)."""
    import pandas as pd

    df = pd.DataFrame({"id": ids, "cluster": clusters.astype(np.int64)})
    for j in range(z.shape[1]):
        df[f"z{j}"] = z[:, j].astype(np.float32)
    df["anomaly_score"] = score.astype(np.float64)
    df["is_anomaly"] = score > thr
    if labels is not None:
        df["label"] = labels
    return df


def write(df, path: Path) -> None:
    """CSV or Parquet by the suffix, written atomically."""
    fmt = path.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(f"assignments file {path}: format {fmt!r} is not one of {list(FORMATS)}")
    with atomic(path) as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def _read_like_training(cfg: Mapping[str, Any], meta: Mapping[str, Any], path: Path):
    """New data read and transformed exactly as the training data were: (samples, ids)."""
    from latentlab import sources

    d, name = cfg["data"], cfg["data"]["name"]
    if name == "table":
        src = sources.read_table(path, features=list(meta["columns"]), id=d["id"])
    elif name == "array":
        src = sources.read_array(path, key=d["key"])
        keep = [int(c[1:]) for c in meta["columns"]]  # x<i>: the columns that were not constant
        if src.x.ndim == 2:
            if src.x.shape[1] <= max(keep):
                raise DataError(f"{path} has {src.x.shape[1]} columns; the model was trained on "
                                f"{len(keep) + len(meta.get('dropped_columns', []))}")
            src.x = src.x[:, keep]
    elif name == "images":
        src = sources.read_image_folder(path, size=d["size"], channels=d["channels"])
    else:
        raise ConfigError(f"predict reads files (data=table | array | images); data.name={name!r} is a "
                          "built-in dataset")
    x = src.x
    if x.ndim == 2:
        x = sources.Scaler.from_dict(meta["scaler"]).transform(x)
    expected = tuple(meta["image_shape"])
    if tuple(x.shape[1:]) != expected:
        raise DataError(f"{path}: samples of shape {tuple(x.shape[1:])}, but the model expects {expected}")
    return x, src.ids


def predict(cfg: Mapping[str, Any], input_path: Path, out: Path, *, data: Path, model: Path, classifier: Path,
            dec_model: Path, summary: Path) -> str:
    """Assignments, latents and anomaly scores of a new file (same format as data.path); the
    clusters by the method the export used (its ``summary``): the finetune stage's
    ``classifier`` or the dec stage's ``dec_model``."""
    from latentlab import dec, finetune, models
    from latentlab.data import Prepared

    info = json.loads(Path(summary).read_text())
    method = info["method"]
    if method == "autoencoder_selflabel" and cfg["finetune"]["rounds"] == 0:
        raise ConfigError("predict assigns clusters with the finetune stage's classifier (the encoder + head of "
                          "autoencoder_selflabel); it was trained with finetune.rounds=0 (no classifier). "
                          "Re-run with finetune.rounds >= 1, or export.method=autoencoder_dec")
    meta = Prepared.load(data).meta
    x, ids = _read_like_training(cfg, meta, Path(input_path))
    z, mse = models.encode(models.load(model), x, desc="encoding")
    if method == "autoencoder_dec":
        clusters = dec.load(dec_model).predict(x)
    else:
        clusters = finetune.predict_proba(finetune.load(classifier), x, **finetune.relabel_args(classifier)).argmax(1)
    df = table(ids, clusters, z, mse, info["threshold"])
    write(df, Path(out))
    return (f"wrote {out}: {len(df)} rows, {df['cluster'].nunique()} {method} clusters, "
            f"{int(df['is_anomaly'].sum())} flagged as anomalies (threshold {info['threshold']:.4g})")
