"""Bring your own data, end to end: the wine table without its label column through the real
`dvc repro`, `latentlab predict`, a Hydra sweep and the MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from test_pipeline import _copy_project, _dvc, _set

BIN = Path(sys.executable).parent
# The README's example (conf/experiment/wine.yaml) unlabelled (the cultivar column is text
# and left out), with fewer epochs.
WINE = ["+experiment=wine", "data.label=null", "train.max_epochs=30", "anomaly.max_epochs=30",
        "finetune.epochs=10", "dec.enabled=true",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "cluster.n_init=2", "evaluate.plot_points=100"]


pytestmark = pytest.mark.e2e  # a real `dvc repro` and a sweep on the CSV


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    from latentlab.config import write_params

    tmp = tmp_path_factory.mktemp("byod")
    repo = _copy_project(tmp / "repo")
    write_params(repo / "params.yaml", WINE)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "LATENTLAB_CACHE": str(tmp / "cache")}
    (tmp / "env.json").write_text(json.dumps(env))
    return repo, _dvc(repo, "repro"), env


def test_dvc_repro_on_a_csv_without_labels(wine):
    repo, out, env = wine
    table = pd.read_csv(repo / "outputs/export/assignments.csv", dtype={"id": str})
    src = pd.read_csv(repo / "examples/wine.csv")
    # one row per input row, in the file's order, with its cluster, latents and anomaly score
    assert table["id"].tolist() == src["wine"].tolist()
    assert list(table.columns) == ["id", "cluster", "z0", "z1", "z2", "z3", "recon_error", "recon_outlier"]
    assert table["cluster"].nunique() == 3  # silhouette picks the three cultivars' k
    assert table["recon_outlier"].sum() == pytest.approx(0.01 * len(table), abs=2)
    m = json.loads((repo / "outputs/evaluate/metrics.json").read_text())
    assert m["labelled"] is False and "acc" not in m["autoencoder_selflabel"]
    assert set(m["autoencoder_selflabel"]) >= {"silhouette", "davies_bouldin", "calinski_harabasz"}
    a = json.loads((repo / "outputs/anomaly/evaluate/metrics.json").read_text())
    assert a["protocol"] == "unsupervised" and "test" not in a and 0 <= a["test_flagged"] < 0.2
    assert "Stage 'download' didn't change" in _dvc(repo, "repro") or "Data and pipelines are up to date" in \
        _dvc(repo, "status", "dvc.yaml")

    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.search_runs([client.get_experiment_by_name("latentlab").experiment_id])[0]
    assert run.data.metrics["autoencoder_selflabel/silhouette"] == pytest.approx(
        m["autoencoder_selflabel"]["silhouette"], abs=5e-5)  # scores are logged to 4 decimals
    assert "assignments.csv" in {f.path for f in client.list_artifacts(run.info.run_id)}


def _predict(repo: Path, env: dict, out: str) -> pd.DataFrame:
    r = subprocess.run([str(BIN / "latentlab"), "predict", "examples/wine.csv", "--out", out], cwd=repo,
                       capture_output=True, text=True, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    return pd.read_parquet(repo / out)


def test_predict_reproduces_the_pipeline_assignments(wine):
    repo, _, env = wine
    for method in ("autoencoder_selflabel", "autoencoder_dec"):
        if method == "autoencoder_dec":  # the other method the export can give: only the export re-runs
            _set(repo / "params.yaml", [f"export.method={method}"])
            out = _dvc(repo, "repro")
            assert "Running stage 'export'" in out and "Running stage 'dec'" not in out, out
        mine = pd.read_csv(repo / "outputs/export/assignments.csv", dtype={"id": str})
        assert json.loads((repo / "outputs/export/summary.json").read_text())["method"] == method
        new = _predict(repo, env, f"{method}.parquet")
        assert new["id"].tolist() == mine["id"].tolist()
        assert (new["cluster"] == mine["cluster"]).all() and (new["recon_outlier"] == mine["recon_outlier"]).all(), method
        pd.testing.assert_frame_equal(new.filter(like="z"), mine.filter(like="z"), check_dtype=False, rtol=1e-5)
    # new data with a column missing: a clear error, no output
    pd.read_csv(repo / "examples/wine.csv").drop(columns=["proline"]).to_csv(repo / "short.csv", index=False)
    r = subprocess.run([str(BIN / "latentlab"), "predict", "short.csv", "--out", "x.csv"], cwd=repo,
                       capture_output=True, text=True, env={**os.environ, **env})
    assert r.returncode == 2 and "'proline' matches no column" in r.stderr and not (repo / "x.csv").exists()


def test_changing_the_csv_reruns_the_pipeline(wine):
    repo, _, _ = wine
    path = repo / "examples/wine.csv"
    df = pd.read_csv(path)
    df.loc[0, "alcohol"] += 0.5
    df.to_csv(path, index=False)
    out = _dvc(repo, "status")  # (a repro would re-run everything: status says it without the wait)
    assert "download:" in out and "modified:           examples/wine.csv" in out


def test_sweep_on_the_csv_compares_by_silhouette(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    from conftest import ROOT

    r = subprocess.run([str(BIN / "latentlab"), "-m", *WINE, f"data.path={ROOT / 'examples/wine.csv'}",
                        "train.max_epochs=10", "finetune.epochs=3", "model.latent_dim=2,4"],
                       cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("latentlab").experiment_id])
    parent = next(x for x in runs if x.data.tags.get("latentlab.sweep") == "parent")
    assert parent.info.status == "FINISHED" and "autoencoder_selflabel/silhouette" in parent.data.metrics
    assert sum(x.data.tags.get("mlflow.parentRunId") == parent.info.run_id for x in runs) == 2


def test_the_readme_own_data_command_on_a_labelled_table_as_a_new_user_runs_it(tmp_path):
    # Exactly the README's command on scikit-learn's iris as a CSV, nothing else set: k is the
    # label count, training is sized to 150 rows, the anomaly branch (150 flowers in three
    # balanced classes: 40 normal training rows) is skipped with its reason, the run exits 0,
    # and the trained pipeline is one `latentlab predict` away (the workspace, or its MLflow run).
    import mlflow
    from sklearn.datasets import load_iris

    repo = _copy_project(tmp_path / "repo")
    bunch = load_iris(as_frame=True)
    df = bunch.frame.drop(columns="target").assign(species=[bunch.target_names[i] for i in bunch.target])
    df.to_csv(repo / "my.csv", index=False)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "LATENTLAB_CACHE": str(tmp_path / "cache")}
    (tmp_path / "env.json").write_text(json.dumps(env))
    out = _dvc(repo, "exp", "run", "-S", "data=table", "-S", "data.path=my.csv", "-S", "data.label=species",
               "-S", "model=mlp")
    assert "k=3: the number of distinct label values" in out
    assert "150 epochs on 150 feature vectors" in out  # the step budget, capped: not 3,700 one-step epochs
    assert "anomaly branch skipped: only 40 normal training rows" in out and "anomaly=unsupervised" in out
    m = json.loads((repo / "outputs/evaluate/metrics.json").read_text())
    assert m["labelled"] and m["exported"]["method"] == "autoencoder_selflabel" and m["train"]["stalled"] is False
    a = json.loads((repo / "outputs/anomaly/evaluate/metrics.json").read_text())
    assert "40 normal training rows" in a["skipped"]

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.search_runs([client.get_experiment_by_name("latentlab").experiment_id])[0]
    assert run.info.run_name == "repro-table-mlp-d32-seed0"
    assert run.data.metrics["exported/acc"] == round(m["exported"]["acc"], 4)
    df.drop(columns="species").head(12).to_csv(repo / "new.csv", index=False)
    mine = pd.read_csv(repo / "outputs/export/assignments.csv").head(12)
    for where in ([], ["--run", run.info.run_id]):
        r = subprocess.run([str(BIN / "latentlab"), "predict", "new.csv", "--out", "new.csv.out.csv", *where],
                           cwd=repo, capture_output=True, text=True, env={**os.environ, **env})
        assert r.returncode == 0, r.stderr
        assert ("MLflow run" if where else "dvc repro workspace") in r.stdout
        new = pd.read_csv(repo / "new.csv.out.csv")
        assert (new["cluster"] == mine["cluster"]).all()
