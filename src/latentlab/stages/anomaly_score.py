"""Stage `anomaly_score`: score every held-out test sample by how unlike the normal data it is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import export, models
from latentlab.anomaly import (Detector, error_for, features, raw_scores, scorer_for, skipped_reason, split_for,
                              write_skipped)
from latentlab.data import Prepared
from latentlab.errors import ConfigError
from latentlab.files import save_npz
from latentlab.stages.common import main


def anomaly_score(cfg: Mapping[str, Any], data: Path, model: Path, out: Path, rows_out: Path,
                  detector_out: Path) -> str:
    """Fit the scorer on normal training features, set its threshold on validation
    normals, score every held-out test sample; and the raw twins (kNN, LOF, isolation
    forest on the inputs, no autoencoder) fitted on the same normal samples."""
    a = cfg["anomaly"]
    if Path(rows_out).suffix.lstrip(".") != cfg["export"]["format"]:
        raise ConfigError(f"--rows-out {rows_out}: the per-row table is written in export.format "
                          f"({cfg['export']['format']}), so its name must end in .{cfg['export']['format']}")
    if (reason := skipped_reason(model)) is not None:
        write_skipped(out, reason)
        write_skipped(detector_out, reason)
        export.write(rows_table([], np.zeros(0), np.zeros(0, bool)), rows_out)  # the header: no rows scored
        return f"anomaly branch skipped: {reason}"
    ds = Prepared.load(data)
    split = split_for(a, cfg["seed"], ds)
    net = models.load(model)
    err = error_for(a["error"], ds.is_images)
    f_fit, f_val, f_test = (features(net, x, err) for x in (split.x_fit, split.x_val, split.x_test))
    scorer = scorer_for(a).fit(f_fit, f_val)
    scores = scorer.score_samples(f_test)
    # the raw twins: the same normal samples, the same test samples, no autoencoder
    raw = raw_scores(split.x_fit, split.x_test, k=a["k"], seed=cfg["seed"])
    save_npz(out, scores=scores, val_scores=scorer.score_samples(f_val), is_anomaly=split.is_anomaly,
             y=split.y_test, recon_error=f_test[:, 0], threshold=np.array(scorer.threshold_), n_val=np.array(len(f_val)),
             **raw)
    flagged = scores > scorer.threshold_
    Detector(scorer, err, split.standardise, {k: v for k, v in cfg["data"].items() if k not in ("mirror", "cache")},
             ds.meta).save(detector_out)
    classes = ds.meta.get("classes")
    export.write(rows_table(ds.ids_test, scores, flagged,
                            labels=[classes[c] if classes else str(c) for c in split.y_test] if ds.labelled else None,
                            is_anomaly=split.is_anomaly if (split.is_anomaly >= 0).all() else None), rows_out)
    known = f"{int((split.is_anomaly == 1).sum())} anomalous" if (split.is_anomaly >= 0).all() else "no labels"
    return (f"wrote {out}, {rows_out} and {detector_out}: {a['score']} scores ({err}) for {len(scores)} test samples "
            f"({known}), threshold {scorer.threshold_:.4g} flags {flagged.mean():.1%} of them")


def rows_table(ids: Any, scores: np.ndarray, flagged: np.ndarray, labels: list[str] | None = None,
               is_anomaly: np.ndarray | None = None):
    """The per-row table a user acts on, one row per scored test sample: its id, the anomaly
    score (higher = more anomalous), whether the threshold flags it, and, when the data has
    labels, its class and whether the protocol counts it as an anomaly."""
    import pandas as pd

    df = pd.DataFrame({"id": np.asarray(ids, dtype=str), "anomaly_score": np.asarray(scores, np.float64),
                       "flagged": np.asarray(flagged, bool)})
    if labels is not None:
        df["label"] = labels
    if is_anomaly is not None:
        df["is_anomaly"] = np.asarray(is_anomaly).astype(bool)
    return df


if __name__ == "__main__":  # DVC: python -m latentlab.stages.anomaly_score --help
    main(anomaly_score)
