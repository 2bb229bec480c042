"""One run of the README's own-data command on one of scikit-learn's labelled tables.

The table is written as ``my.csv`` into a copy of the workspace, which then runs exactly
``dvc exp run -S data=table -S data.path=my.csv -S data.label=<label> -S model=mlp -S seed=<seed>``:
nothing else set, as a new user would. The record: the wall time, the k the run chose, the
exported method's ACC / NMI and the best raw method's, and what the anomaly branch did.

    python pipelines/tables/run.py --table iris --seed 0 --out pipelines/tables/records/iris-seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import study  # noqa: E402

# scikit-learn loader, label column name: the class names become the label values
TABLES = {"iris": ("load_iris", "species"), "wine": ("load_wine", "cultivar"),
          "breast_cancer": ("load_breast_cancer", "diagnosis")}


def write_table(name: str, path: Path) -> str:
    """The bundled table as a user's CSV (features, then the class name); returns its shape."""
    import sklearn.datasets

    loader, label = TABLES[name]
    bunch = getattr(sklearn.datasets, loader)(as_frame=True)
    df = bunch.frame.drop(columns="target")
    df[label] = [str(bunch.target_names[i]) for i in bunch.target]
    df.to_csv(path, index=False)
    return f"{len(df)} x {df.shape[1] - 1}"


def run_one(name: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"study-tables-{name}-") as tmp:
        repo = study.copy_workspace(Path(tmp))
        shape = write_table(name, repo / "my.csv")
        cmd = ["dvc", "exp", "run", "-S", "data=table", "-S", "data.path=my.csv", "-S",
               f"data.label={TABLES[name][1]}", "-S", "model=mlp", "-S", f"seed={seed}"]
        seconds = study.run(cmd, repo)
        m = json.loads((repo / "outputs/evaluate/metrics.json").read_text())
        a = json.loads((repo / "outputs/anomaly/evaluate/metrics.json").read_text())
        with __import__("numpy").load(repo / "outputs/cluster/assignments.npz") as f:
            k = int(f["k"])
    exported = m["exported"]["method"]
    raws = [key for key in m if key.startswith("raw_") and isinstance(m[key], dict) and "acc" in m[key]]
    best_raw = max(raws, key=lambda key: m[key]["acc"])
    anomaly = ({"skipped": a["skipped"]} if "skipped" in a else
               {"normal": a.get("plan"), "auroc": a["test"]["auroc"], "auprc": a["test"]["auprc"],
                "stalled": a["train"]["stalled"]})
    return {**study.provenance(), "table": name, "shape": shape, "seed": seed, "seconds": round(seconds, 1),
            "command": " ".join(cmd), "k": k, "exported": exported, "acc": m[exported]["acc"],
            "nmi": m[exported]["nmi"], "autoencoder_acc": m["autoencoder"]["acc"], "best_raw": best_raw,
            "best_raw_acc": m[best_raw]["acc"], "best_raw_nmi": m[best_raw]["nmi"],
            "stalled": m["train"]["stalled"], "anomaly": anomaly}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True, choices=list(TABLES))
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    record = run_one(a.table, a.seed)
    study.write_record(a.out, record)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
