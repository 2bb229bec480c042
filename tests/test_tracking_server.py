"""A sweep logging to a real `mlflow server` on 127.0.0.1, started and stopped by the test."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_sweep import TINY_SWEEP, latentlab, runs_of

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e  # a real server: 45-60 s to its first answer on 2 cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = open(tmp / "server.log", "w")
    # As the README says: a database backend, artifacts served (proxied) by the server.
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
                             "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # first answer takes 45-60 s on this 2-core machine
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, tmp
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_parallel_sweep_logs_to_a_tracking_server(server, tmp_path):
    import mlflow

    url, server_dir = server
    latentlab(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_SWEEP,
              "model.latent_dim=2,3", "seed=0,1", uri=url)
    client, runs = runs_of(url)
    parent = next(r for r in runs if r.data.tags.get("latentlab.sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert all(r.info.status == "FINISHED" and "autoencoder/nmi" in r.data.metrics for r in children)
    # artifacts went through the server into its own store, not into the client's folder
    run = children[0]
    assert "figures/latent_umap.png" in {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert list((server_dir / "artifacts").rglob("latent_umap.png"))
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()
    mlflow.set_tracking_uri(url)
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    import torch

    assert tuple(model(torch.rand(3, 1, 28, 28)).shape) == (3, 1, 28, 28)
    assert "summary.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}


# Light jobs: the load is on the server (20 runs opened, logged and closed at once), not the CPU.
LOAD = [*TINY_SWEEP, "data.max_train=500", "data.max_test=200", "train.max_epochs=1", "cluster=kmeans",
        "finetune.rounds=0", "tracking.experiment=load20"]


@pytest.mark.faults  # 20 jobs, 4 at a time, on 2 cores: about 5 min
def test_a_20_job_parallel_sweep_against_one_server_loses_no_run_and_no_metric(server, tmp_path):
    import mlflow

    url, _ = server
    latentlab(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *LOAD,
              "model.latent_dim=2,3,4,5,6", "seed=0,1,2,3", uri=url)
    client = mlflow.MlflowClient(url)
    exp = client.get_experiment_by_name("load20")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in runs if r.data.tags.get("latentlab.sweep") == "parent"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    combos = {(r.data.params["model.latent_dim"], r.data.params["seed"]) for r in children}
    assert len(children) == 20 and len(combos) == 20
    want = {f"{m}/{k}" for m in ("autoencoder", "autoencoder_selflabel", "raw_kmeans") for k in ("acc", "nmi", "ari")}
    for r in children:
        assert r.info.status == "FINISHED", r.data.tags.get("error")
        assert want <= set(r.data.metrics), want - set(r.data.metrics)
        history = client.get_metric_history(r.info.run_id, "val/recon_loss")
        assert len(history) == 1  # one epoch, logged once
