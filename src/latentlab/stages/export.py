"""Stage `export`: the table users take away, one row per scored sample."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import export as ex
from latentlab import metric_names as M
from latentlab.data import Prepared
from latentlab.errors import LatentlabError
from latentlab.files import write_json
from latentlab.stages.common import by_protocol, main, scored


def export(cfg: Mapping[str, Any], data: Path, latents: Path, assignments: Path, dec_assignments: Path, out: Path,
           summary_out: Path) -> str:
    """The table users take away (see ``latentlab.export``): one row per scored sample in
    the source file's order, its cluster from export.method (``assignments``: the finetune
    stage's, ``dec_assignments``: the dec stage's), and a summary (the method and the
    anomaly threshold ``predict`` applies)."""
    protocol = cfg["protocol"]
    ds = Prepared.load(data)
    ids, rows = ds.ids(protocol)
    _, _, _, y = ds.split(protocol)
    with np.load(latents) as z:
        mse_fit = by_protocol(protocol, z["mse_train"], z["mse_test"])[0]
        mse = scored(protocol, z["mse_train"], z["mse_test"])
        z_score = scored(protocol, z["z_train"], z["z_test"])
    method = cfg["export"]["method"]
    with np.load(dec_assignments if method == M.AUTOENCODER_DEC else assignments) as f:
        if method not in f.files:
            raise LatentlabError(f"export.method={method}, but its stage wrote no assignments (is it turned "
                                 "off?); re-run `dvc repro`")
        clusters = f[method]
    if not len(ids) == len(clusters) == len(z_score):
        raise LatentlabError(f"stage outputs disagree: {len(ids)} samples, {len(clusters)} assignments, "
                             f"{len(z_score)} latents; re-run `dvc repro`")
    # The contamination assumption: that fraction of the data the autoencoder learnt from is anomalous.
    thr = ex.threshold(mse_fit, cfg["export"]["contamination"])
    classes = ds.meta.get("classes")
    labels = None if not ds.labelled else [classes[i] if classes else str(i) for i in y]
    order = np.argsort(rows, kind="stable")
    df = ex.table(ids, clusters, z_score, mse, thr, labels).iloc[order].reset_index(drop=True)
    ex.write(df, out)
    # how the data were read and scaled: `latentlab predict` reads new data the same way from this file alone
    meta = {k: ds.meta[k] for k in ("dataset", "columns", "dropped_columns", "scaler", "classes", "image_shape")
            if k in ds.meta}
    summary = {"method": method, "rows": len(df), "clusters": int(df["cluster"].nunique()), "threshold": thr,
               "contamination": cfg["export"]["contamination"], "flagged": int(df["recon_outlier"].sum()),
               "data": {k: v for k, v in cfg["data"].items() if k not in ("mirror", "cache")}, "meta": meta}
    write_json(summary_out, summary)
    return (f"wrote {out} and {summary_out}: {summary['rows']} rows in {summary['clusters']} {method} clusters, "
            f"{summary['flagged']} with a reconstruction error above {thr:.4g} (recon_outlier)")


if __name__ == "__main__":  # DVC: python -m latentlab.stages.export --help
    main(export)
