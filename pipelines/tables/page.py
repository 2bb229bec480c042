"""docs/results-tables.md from the tables study's records.

    python pipelines/tables/page.py pipelines/tables/records --out docs/results-tables.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import study  # noqa: E402

TABLES = ["iris", "wine", "breast_cancer"]


def page(rows: list[dict]) -> list[str]:
    spread = study.spread
    commits = sorted({r["commit"][:10] + (" + edits" if r["dirty"] else "") for r in rows})
    out = ["# The README's own-data command on labelled tables",
           "",
           "Written by `dvc repro pipelines/tables/dvc.yaml` from its records (`pipelines/tables/records/`, kept in git; "
           f"commit {', '.join(commits)}, {rows[0]['machine']}). Each run is a fresh copy of the project and "
           "exactly the README's command, nothing else set (`dvc exp run -S data=table -S data.path=my.csv "
           "-S data.label=<label> -S model=mlp -S seed=<seed>`), seeds 0-2: mean [min, max].",
           "",
           "| table | rows x features | k | exported method ACC | best raw method ACC | ahead (seeds) | "
           "`autoencoder` (UMAP + GMM) ACC | anomaly branch | wall time of `dvc exp run` |",
           "| --- | --- | ---: | --- | --- | :---: | --- | --- | --- |"]
    verdicts = []
    for name in TABLES:
        rs = sorted((r for r in rows if r["table"] == name), key=lambda r: r["seed"])
        if not rs:
            continue
        ahead = sum(r["acc"] > r["best_raw_acc"] for r in rs)
        raws = sorted({r["best_raw"] for r in rs})
        an = rs[0]["anomaly"]
        anomaly = (f"skipped: {an['skipped'].split(';')[0]}" if "skipped" in an else
                   "AUROC " + spread([r["anomaly"]["auroc"] for r in rs]))
        out.append(f"| {name} | {rs[0]['shape']} | {', '.join(sorted({str(r['k']) for r in rs}))} | "
                   f"{spread([r['acc'] for r in rs])} (`{rs[0]['exported']}`) | "
                   f"{spread([r['best_raw_acc'] for r in rs])} ({', '.join(f'`{x}`' for x in raws)}) | "
                   f"{ahead} of {len(rs)} | {spread([r['autoencoder_acc'] for r in rs])} | {anomaly} | "
                   f"{np.median([r['seconds'] for r in rs]):.0f} s (median), at most "
                   f"{max(r['seconds'] for r in rs):.1f} s |")
        gap = np.mean([r["acc"] - r["best_raw_acc"] for r in rs])
        verdicts.append(f"- **{name}**: " + (
            f"the autoencoder helps: the exported method is ahead of every raw method on every seed, by {gap:+.3f} "
            "ACC on average." if ahead == len(rs) else
            f"no clear gain: the exported method is {gap:+.3f} ACC from the best raw method on average, ahead on "
            f"{ahead} of {len(rs)} seeds." if gap > 0 else
            f"the autoencoder does not help here: the exported method is {gap:+.3f} ACC from the best raw method on "
            f"average, ahead on {ahead} of {len(rs)} seeds."))
    out += ["", "The best raw method is the strongest of `raw_kmeans`, `raw_pca_kmeans`, `raw_cluster` and "
            "`raw_selflabel` on each seed.", "", *verdicts, "",
            "k is the number of label values on every table (the run says so: `k=3: the number of distinct label "
            "values`). The anomaly branch's default takes the most frequent class as normal; below 64 normal "
            "training rows it is skipped with its reason and the fix, and the run still exits 0. The wall time "
            "includes the first run's compilation of UMAP's numba kernels only where a fresh environment pays it "
            "(these runs share one environment)."]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("records", help="the records folder")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rows = study.read_records(a.records)
    study.write_page(a.out, page(rows))
    study.write_summaries(a.records, rows, "table", lambda rs: {"acc": np.mean([r["acc"] for r in rs]),
                                                                 "nmi": np.mean([r["nmi"] for r in rs])})


if __name__ == "__main__":
    main()
