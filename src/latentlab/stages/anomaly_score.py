"""Stage `anomaly_score`: score every held-out test sample by how unlike the normal data it is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import models
from latentlab.anomaly import error_for, features, scorer_for, skipped_reason, split_for, write_skipped
from latentlab.data import Prepared
from latentlab.files import save_npz
from latentlab.stages.common import main


def anomaly_score(cfg: Mapping[str, Any], data: Path, model: Path, out: Path) -> str:
    """Fit the scorer on normal training features, set its threshold on validation
    normals, score every held-out test sample."""
    a = cfg["anomaly"]
    if (reason := skipped_reason(model)) is not None:
        write_skipped(out, reason)
        return f"anomaly branch skipped: {reason}"
    ds = Prepared.load(data)
    split = split_for(a, cfg["seed"], ds)
    net = models.load(model)
    err = error_for(a["error"], ds.is_images)
    f_fit, f_val, f_test = (features(net, x, err) for x in (split.x_fit, split.x_val, split.x_test))
    scorer = scorer_for(a).fit(f_fit, f_val)
    scores = scorer.score_samples(f_test)
    save_npz(out, scores=scores, val_scores=scorer.score_samples(f_val), is_anomaly=split.is_anomaly,
             y=split.y_test, recon_error=f_test[:, 0], threshold=np.array(scorer.threshold_))
    flagged = scores > scorer.threshold_
    known = f"{int((split.is_anomaly == 1).sum())} anomalous" if (split.is_anomaly >= 0).all() else "no labels"
    return (f"wrote {out}: {a['score']} scores ({err}) for {len(scores)} test samples "
            f"({known}), threshold {scorer.threshold_:.4g} flags {flagged.mean():.1%} of them")


if __name__ == "__main__":  # DVC: python -m latentlab.stages.anomaly_score --help
    main(anomaly_score)
