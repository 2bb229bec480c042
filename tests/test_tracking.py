"""Where runs go, and what a run's parameters look like."""


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
