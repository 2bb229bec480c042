"""The anomaly branch on a user's table beside PyOD's standard detectors, on the same rows.

The outlier-detection protocol on unbalanced tables: one of scikit-learn's bundled tables with
some classes normal and the rest subsampled (seeded) to 5% of the rows as the anomalies. In a
copy of the workspace, the README's way: ``latentlab task=anomaly data=table ... 'anomaly.normal=[...]'``
with the protocol's stratified 60/40 split (``data.test_fraction=0.4``); the autoencoder and its
raw twins fit on the train split's normal rows. Then PyOD's IForest, LOF, OCSVM, KNN and AutoEncoder at their defaults, fitted on the
same train-split normal rows (z-scored on them, as the twins are) and scored on the same test rows
(the run's ``anomaly/rows.csv``). Needs the ``bench`` dependency group (PyOD).

    python pipelines/pyod/run.py --table breast_cancer --seed 0 --record pipelines/pyod/records/breast_cancer-seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import study  # noqa: E402

ANOMALY_SHARE = 0.05
# scikit-learn loader, the classes that are normal (the rest are the anomalies)
TABLES = {"breast_cancer": ("load_breast_cancer", ["benign"]),
          "wine": ("load_wine", ["class_0", "class_1"]),
          "digits": ("load_digits", ["0", "1", "2", "3", "4"])}
DETECTORS = ("IForest", "LOF", "OCSVM", "KNN", "AutoEncoder")


def make_table(name: str, seed: int):
    """The table as a user's CSV (``row`` id, features, ``cls``), anomalies subsampled to 5%."""
    import pandas as pd
    import sklearn.datasets

    loader, normal = TABLES[name]
    bunch = getattr(sklearn.datasets, loader)()
    names = [str(n) for n in bunch.target_names]
    cls = np.array([names[t] for t in bunch.target])
    is_normal = np.isin(cls, normal)
    n_anom = int(round(is_normal.sum() * ANOMALY_SHARE / (1 - ANOMALY_SHARE)))
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([np.flatnonzero(is_normal),
                                   rng.choice(np.flatnonzero(~is_normal), n_anom, replace=False)]))
    df = pd.DataFrame(bunch.data[keep], columns=[f"f{j}" for j in range(bunch.data.shape[1])])
    df.insert(0, "row", [f"r{i}" for i in keep])
    df["cls"] = cls[keep]
    return df, normal


def pyod_scores(x_fit: np.ndarray, x_test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    import importlib

    center, scale = x_fit.mean(0), x_fit.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    fit, test = (x_fit - center) / scale, (x_test - center) / scale
    out = {}
    for name in DETECTORS:
        module = {"IForest": "iforest", "LOF": "lof", "OCSVM": "ocsvm", "KNN": "knn", "AutoEncoder": "auto_encoder"}[name]
        cls = getattr(importlib.import_module(f"pyod.models.{module}"), name)
        kw = {"random_state": seed} if name in ("IForest", "AutoEncoder") else {}
        if name == "AutoEncoder":
            kw["verbose"] = 0
        out[name] = cls(**kw).fit(fit).decision_function(test)
    return out


def run_one(name: str, seed: int) -> dict:
    import pandas as pd
    from sklearn.metrics import average_precision_score, roc_auc_score

    df, normal = make_table(name, seed)
    with tempfile.TemporaryDirectory(prefix=f"study-pyod-{name}-") as tmp:
        repo = study.copy_workspace(Path(tmp))
        df.to_csv(repo / "my.csv", index=False)
        cmd = ["latentlab", "task=anomaly", "data=table", "data.path=my.csv", "data.label=cls", "data.id=row",
               "model=mlp", f"anomaly.normal=[{','.join(normal)}]", "data.test_fraction=0.4", f"seed={seed}",
               "hydra.run.dir=outputs/run"]
        seconds = study.run(cmd, repo)
        m = json.loads((repo / "outputs/run/anomaly/evaluate/metrics.json").read_text())
        rows = pd.read_csv(repo / "outputs/run/anomaly/rows.csv", dtype={"id": str})
    test = df.set_index("row").loc[rows["id"]]
    train = df[~df["row"].isin(rows["id"])]
    train_normal = train[train["cls"].isin(normal)]
    features = [c for c in df.columns if c.startswith("f")]
    y = (~test["cls"].isin(normal)).to_numpy().astype(int)
    assert (y == rows["is_anomaly"].to_numpy().astype(int)).all(), "the run's test rows disagree with the table"
    pyod = {k: {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s))}
            for k, s in pyod_scores(train_normal[features].to_numpy(float), test[features].to_numpy(float),
                                    seed).items()}
    return {**study.provenance(), "table": name, "seed": seed, "rows": len(df), "features": len(features),
            "normal": normal, "anomalies": int((~df["cls"].isin(normal)).sum()), "test_rows": len(rows),
            "test_anomalies": int(y.sum()), "train_normal_rows": len(train_normal), "command": " ".join(cmd),
            "seconds": round(seconds, 1),
            "autoencoder": {"auroc": m["test"]["auroc"], "auprc": m["test"]["auprc"], "score": m["score"],
                            "stalled": m["train"]["stalled"], "epochs": m["train"]["epochs"]},
            "raw": {k: {"auroc": v["auroc"], "auprc": v["auprc"]} for k, v in m["raw"].items()},
            "pyod": pyod, "false_positives": m["test_false_positives"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True, choices=list(TABLES))
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--record", required=True)
    a = p.parse_args()
    record = run_one(a.table, a.seed)
    study.write_record(a.record, record)
    print(json.dumps({k: record[k] for k in ("table", "seed", "autoencoder", "pyod")}))


if __name__ == "__main__":
    main()
