"""docs/results-pyod.md from the pyod study's records: the anomaly branch beside its raw twins
and PyOD's detectors, AUROC and AUPRC, mean [min, max] over seeds, per table.

    python pipelines/pyod/page.py pipelines/pyod/records --out docs/results-pyod.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import study  # noqa: E402

from run import DETECTORS, TABLES  # noqa: E402  (pipelines/pyod/run.py)


def page(rows: list[dict]) -> list[str]:
    commits = sorted({r["commit"][:10] + (" + edits" if r.get("dirty") else "") for r in rows})
    out = ["# Anomaly detection on tables, beside PyOD", "",
           "Written by `dvc repro pipelines/pyod/dvc.yaml` from its records (`pipelines/pyod/records/`, kept in git; "
           f"commit {', '.join(commits)}, {rows[0]['machine']}). Each table: some classes normal, the others "
           "subsampled (seeded) to 5% of the rows as the anomalies. The anomaly branch runs as a user runs it, "
           "`latentlab task=anomaly data=table data.path=my.csv data.label=cls model=mlp 'anomaly.normal=[...]' "
           "data.test_fraction=0.4` (the protocol's stratified 60/40 split); "
           "its raw twins (`raw_*`, in the same run) and PyOD's detectors at their defaults are fitted on the same "
           "train-split normal rows, z-scored on them, and scored on the same test rows. Mean [min, max] over "
           "seeds; **bold**: the best of the row's detectors.", ""]
    for metric in ("auroc", "auprc"):
        out += [f"## {metric.upper()}", "", "| table | rows (anomalies) | autoencoder | " +
                " | ".join(f"`{n}`" for n in ("raw_knn", "raw_lof", "raw_iforest")) + " | " +
                " | ".join(f"PyOD {d}" for d in DETECTORS) + " | autoencoder - best PyOD |",
                "| --- | --- |" + " --- |" * (1 + 3 + len(DETECTORS)) + " --- |"]
        for name in TABLES:
            rs = sorted((r for r in rows if r["table"] == name), key=lambda r: r["seed"])
            if not rs:
                continue
            cols = {"autoencoder": [r["autoencoder"][metric] for r in rs]}
            cols.update({n: [r["raw"][n][metric] for r in rs] for n in ("raw_knn", "raw_lof", "raw_iforest")})
            cols.update({d: [r["pyod"][d][metric] for r in rs] for d in DETECTORS})
            best = max(cols, key=lambda c: np.mean(cols[c]))
            best_pyod = max(DETECTORS, key=lambda d: np.mean(cols[d]))
            gap = np.mean(cols["autoencoder"]) - np.mean(cols[best_pyod])
            cells = [(f"**{study.spread(v)}**" if c == best else study.spread(v)) for c, v in cols.items()]
            out.append(f"| {name} | {rs[0]['rows']} ({rs[0]['anomalies']}) | " + " | ".join(cells) +
                       f" | {gap:+.3f} (vs {best_pyod}) |")
        out.append("")
    verdicts = []
    for name in TABLES:
        rs = [r for r in rows if r["table"] == name]
        if not rs:
            continue
        beat = [m for m in ("auroc", "auprc") if np.mean([r["autoencoder"][m] for r in rs]) >=
                max(np.mean([r["pyod"][d][m] for r in rs]) for d in DETECTORS)]
        verdicts.append(f"- **{name}**: the autoencoder score is " + (
            "at least the best PyOD detector in AUROC and AUPRC." if len(beat) == 2 else
            f"at least the best PyOD detector in {beat[0].upper()} only." if beat else
            "behind the best PyOD detector in both AUROC and AUPRC."))
    fp = [r["false_positives"] for r in rows]
    out += ["## Verdict", "", *verdicts, "",
            f"Threshold (1% target): the realised false-positive rate on normal test rows was "
            f"{study.spread([f['rate'] for f in fp])} over these runs, set on "
            f"{study.spread([f['validation_normals'] for f in fp], '.0f')} validation normals. Run time of "
            f"`latentlab task=anomaly`: {study.spread([r['seconds'] for r in rows], '.0f')} s."]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("records", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    rows = study.read_records(a.records)
    study.write_page(a.out, page(rows))
    study.write_summaries(a.records, rows, "table", lambda rs: {
        m: np.mean([r["autoencoder"][m] for r in rs]) for m in ("auroc", "auprc")})


if __name__ == "__main__":
    main()
