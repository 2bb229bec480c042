"""Where runs go, and what a run's parameters look like."""

import pytest

from latentlab import config, tracking


def test_store_defaults_to_an_absolute_sqlite_file_at_the_root(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "pipelines").mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(tmp_path / "pipelines") == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_queued_experiment_copy_logs_to_the_real_root(tmp_path):
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    (copy / "dvc.yaml").write_text("stages: {}\n")
    assert config.project_root(copy) == tmp_path / "repo"


def test_flatten_keeps_lists_whole():
    flat = tracking.flatten({"model": {"latent_dim": 10, "hidden": [500, 2000]}, "seed": 0, "x": None})
    assert flat == {"model.latent_dim": "10", "model.hidden": "[500, 2000]", "seed": "0", "x": "None"}


def test_an_anomaly_run_logs_the_model_it_trained_once():
    from omegaconf import OmegaConf

    from latentlab.config import compose

    cfg = OmegaConf.to_container(compose(["task=anomaly", "anomaly.latent_dim=7"]), resolve=True)
    flat = tracking.flatten(tracking.task_params(cfg, "anomaly"))
    assert flat["model.latent_dim"] == "7" == flat["anomaly.latent_dim"]
    assert flat["model._target_"] == cfg["anomaly"]["model"]["_target_"] != cfg["model"]["_target_"]
    # not twice (anomaly.model.latent_dim would say 32), and no section only the clustering reads
    assert not [k for k in flat if k.startswith(("anomaly.model.", "finetune.", "cluster.", "baselines."))]
    cluster = tracking.flatten(tracking.task_params(cfg, "cluster"))
    assert cluster["model._target_"] == cfg["model"]["_target_"] and not any(k.startswith("anomaly.") for k in cluster)


def test_git_dirty_ignores_what_dvc_itself_rewrites(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    for name in ("code.py", "dvc.lock", "data.dvc"):
        (tmp_path / name).write_text("1\n")
    git("add", ".")
    git("commit", "-qm", "x")
    (tmp_path / "dvc.lock").write_text("2\n")  # every `dvc repro` rewrites these before evaluate logs
    (tmp_path / "data.dvc").write_text("2\n")
    assert tracking.git_commit(tmp_path)[1] is False
    (tmp_path / "code.py").write_text("2\n")  # a user's edit is
    assert tracking.git_commit(tmp_path)[1] is True


@pytest.mark.e2e  # a real `mlflow ui` server process, ~40 s to answer
def test_latentlab_ui_serves_the_store_and_prints_the_view_address(tmp_path):
    """`latentlab ui`: MLflow's UI on the project's store, and the address whose view shows the scores."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import mlflow

    uri = os.environ["MLFLOW_TRACKING_URI"]
    exp_id = mlflow.MlflowClient(uri).create_experiment("latentlab")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "from latentlab.cli import main; main()", "ui", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.strip() == (f"MLflow UI: http://127.0.0.1:{port}/#/experiments/{exp_id}/runs"
                                f"?viewStateShareKey={tracking.UI_VIEW_KEY}")
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("the UI never answered")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
