"""Hydra sweeps with the installed `latentlab` command: parallel jobs, MLflow parent/child runs, compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MIRROR, TINY

BIN = Path(sys.executable).parent
TINY_SWEEP = [o for o in TINY if not o.startswith("train.max_epochs")] + ["train.max_epochs=2"]


def latentlab(cwd: Path, *args: str, check: bool = True, uri: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LATENTLAB_DATA_MIRROR": str(MIRROR), **({"MLFLOW_TRACKING_URI": uri} if uri else {})}
    r = subprocess.run([str(BIN / "latentlab"), *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check:
        assert r.returncode == 0, f"latentlab {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def runs_of(uri: str):
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("latentlab")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def parallel_sweep(tmp_path_factory, mirror):
    """8 jobs (2 architectures x 2 latent sizes x 2 seeds), two at a time with joblib."""
    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    r = latentlab(tmp, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_SWEEP,
                  "model=mlp,conv", "model.latent_dim=2,4", "seed=0,1", uri=uri)
    return tmp, uri, r.stdout + r.stderr


@pytest.mark.e2e
def test_parallel_sweep_loses_no_run_and_no_metric(parallel_sweep):
    tmp, uri, out = parallel_sweep
    assert "database is locked" not in out
    client, runs = runs_of(uri)
    parents = [r for r in runs if r.data.tags.get("latentlab.sweep") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "model.latent_dim=2,4" in parent.data.tags["sweep.overrides"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 8 == len(runs) - 1
    assert all(r.info.status == "FINISHED" for r in children)
    combos = {(r.data.params["model._target_"].rsplit(".", 1)[1], r.data.params["model.latent_dim"],
               r.data.params["seed"]) for r in children}
    assert len(combos) == 8
    for r in children:
        for m in ("autoencoder/acc", "autoencoder/nmi", "raw_kmeans/acc", "raw_pca_kmeans/nmi", "raw_cluster/acc",
                  "recon_mse"):
            assert m in r.data.metrics, (r.info.run_name, m)
        assert [h.step for h in client.get_metric_history(r.info.run_id, "val/recon_loss")] == [0, 1]
        # each job's outputs in its own folder, and they are what MLflow holds
        job_dir = Path(parent.data.tags["sweep.dir"]) / r.data.tags["hydra.job_num"]
        metrics = json.loads((job_dir / "evaluate/metrics.json").read_text())
        assert metrics["autoencoder"]["acc"] == pytest.approx(r.data.metrics["autoencoder/acc"])


@pytest.mark.e2e
def test_data_and_baselines_are_prepared_once_per_sweep(parallel_sweep):
    tmp, _, out = parallel_sweep
    assert out.count("[download] wrote") == 1
    assert out.count("[baselines] wrote") == 2  # one per seed
    assert out.count("[train] wrote") == 8
    assert len(list((tmp / "data/cache").glob("download-prepared-*.npz"))) == 1


@pytest.mark.e2e
def test_parent_run_carries_the_comparison(parallel_sweep):
    import mlflow

    tmp, uri, out = parallel_sweep
    client, runs = runs_of(uri)
    parent = next(r for r in runs if r.data.tags.get("latentlab.sweep") == "parent")
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "summary.csv", "runs.csv", "autoencoder_acc.png"} <= names
    local = Path(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="summary.md",
                                                     tracking_uri=uri))
    table = local.read_text()
    assert "| mlp | 4 | 2 |" in table and "| conv | 2 | 2 |" in table
    assert "best single run" in table
    # the parent's row shows the best configuration's mean over seeds
    best = parent.data.tags["sweep.best_config"]
    model, latent = (kv.split("=")[1] for kv in best.split(", "))
    accs = [r.data.metrics["autoencoder/acc"] for r in runs if r.data.params.get("model.latent_dim") == latent
            and r.data.params["model._target_"].lower().startswith(f"latentlab.models.{model}")]
    assert len(accs) == 2 and parent.data.metrics["autoencoder/acc"] == pytest.approx(sum(accs) / 2)


@pytest.mark.e2e
def test_compare_command_summarises_the_latest_sweep(parallel_sweep):
    import pandas as pd

    tmp, uri, _ = parallel_sweep
    r = latentlab(tmp, "compare", "--sweep", "latest", "--out", "cmp", uri=uri)
    assert "8 finished runs" in r.stdout
    # the page says which command made the sweep, so that a reader can make it again
    made = next(line for line in (tmp / "cmp/summary.md").read_text().splitlines() if line.startswith("Made by"))
    assert "`latentlab -m " in made and "model=mlp,conv" in made and "model.latent_dim=2,4" in made, made
    summary = pd.read_csv(tmp / "cmp/summary.csv")
    assert len(summary) == 4 and set(summary["runs"]) == {2}
    # the mean over seeds is the mean of the runs' own metrics
    _, runs = runs_of(uri)
    accs = [r.data.metrics["autoencoder/acc"] for r in runs
            if r.data.params.get("model._target_", "").endswith("MLPAutoencoder")
            and r.data.params["model.latent_dim"] == "4"]
    row = summary[(summary["params.model"] == "mlp") & (summary["params.model.latent_dim"] == 4)].iloc[0]
    assert row["autoencoder/acc mean"] == pytest.approx(sum(accs) / 2)
    assert row["autoencoder/acc min"] == pytest.approx(min(accs))
    # the paired gain: per run, the method minus its raw twin; over seeds, the spread of those differences
    gains = [r.data.metrics["autoencoder/acc"] - r.data.metrics["raw_cluster/acc"] for r in runs
             if r.data.params.get("model._target_", "").endswith("MLPAutoencoder")
             and r.data.params["model.latent_dim"] == "4"]
    assert row["gain/autoencoder/acc mean"] == pytest.approx(sum(gains) / 2)
    assert row["gain/autoencoder/acc min"] == pytest.approx(min(gains))
    # a sweep over the autoencoder moves its methods, never the raw twins: one value per seed
    for twin in ("raw_cluster/acc", "raw_selflabel/acc", "raw_kmeans/acc"):
        per_seed = {}
        for r in runs:
            if r.data.tags.get("latentlab.sweep") != "parent":
                per_seed.setdefault(r.data.params["seed"], set()).add(r.data.metrics[twin])
        assert all(len(v) == 1 for v in per_seed.values()), (twin, per_seed)
    for png in ("autoencoder_acc.png", "autoencoder_nmi.png", "gain_autoencoder_selflabel_acc.png", "recon_mse.png"):
        assert (tmp / "cmp" / png).stat().st_size > 10_000


def test_compare_without_runs_is_a_clear_error(tmp_path):
    r = latentlab(tmp_path, "compare", "--sweep", "latest", check=False)
    assert r.returncode == 2
    assert "error: no MLflow experiment 'latentlab'" in r.stderr and "Traceback" not in r.stderr


def test_single_run_rejects_a_bad_value_before_any_work(tmp_path):
    r = latentlab(tmp_path, "model.latent_dim=0", check=False)
    assert r.returncode == 2
    assert "error: model.latent_dim must be an int >= 1, got 0" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "data").exists()
    assert not (tmp_path / "runs").exists()  # no empty run folder


@pytest.mark.parametrize("typo", ["model.latentdim=4", "+model.latentdim=4", "-m model.latentdim=2,4"])
def test_an_unknown_key_is_one_line_naming_the_closest_valid_one(tmp_path, typo):
    r = latentlab(tmp_path, *typo.split(), check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {typo.split()[-1]}: the config has no key 'model.latentdim'; did you mean 'model.latent_dim'?"]
    assert not (tmp_path / "runs").exists()


def test_keys_a_group_choice_brings_are_known(tmp_path):
    from latentlab.config import check_keys

    check_keys(["model=conv", "model.channels=[8,16]", "+experiment=best", "hydra.launcher.n_jobs=2"])
    check_keys(["model=conv,mlp", "model.hidden=[8]"])  # valid under one of the swept choices
    from latentlab.errors import ConfigError

    with pytest.raises(ConfigError, match="no key 'model.hidden'"):
        check_keys(["model=conv", "model.hidden=[8]"])  # conv has none


def test_a_failed_shared_stage_leaves_no_lock_behind(tmp_path):
    from latentlab.sweep import _cached

    def fails(path):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _cached(tmp_path / "cache" / "x.npz", fails)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_sweep_parent_with_nothing_to_compare_closes_failed(tmp_path):
    """The atexit hook handed close_run a tuple as metrics and left the parent RUNNING."""
    import mlflow

    from latentlab import tracking
    from latentlab.sweep import MLflowSweep

    cb = MLflowSweep()
    cb.experiment, cb.sweep_dir = "latentlab", tmp_path
    cb.parent_id = parent = tracking.open_parent("latentlab", name="sweep-x", tags={}, root=tmp_path)
    cb._close("FINISHED")
    assert mlflow.MlflowClient().get_run(parent).info.status == "FAILED"


def test_a_latent_size_the_anomaly_task_would_ignore_is_refused_before_any_work(tmp_path):
    r = latentlab(tmp_path, "task=anomaly", "model.latent_dim=5", check=False)
    assert r.returncode == 2
    assert ("error: model.latent_dim=5 has no effect under task=anomaly: the anomaly branch trains "
            "anomaly.latent_dim=10" in r.stderr)
    assert "Traceback" not in r.stderr and not (tmp_path / "data").exists()


@pytest.mark.e2e
def test_a_failed_job_does_not_stop_the_sweep_and_fails_the_parent(tmp_path):
    r = latentlab(tmp_path, "-m", *TINY_SWEEP, "model.latent_dim=0,3", check=False)
    assert r.returncode != 0
    assert "model.latent_dim must be an int >= 1, got 0" in r.stdout + r.stderr
    _, runs = runs_of(os.environ["MLFLOW_TRACKING_URI"])
    parent = next(r for r in runs if r.data.tags.get("latentlab.sweep") == "parent")
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FAILED"
    assert [(c.data.params["model.latent_dim"], c.info.status) for c in children] == [("3", "FINISHED")]


@pytest.mark.e2e
def test_submitit_launcher_runs_the_sweep(tmp_path):
    """Hydra's submitit launcher, locally: the same code path as SLURM, minus the scheduler."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    latentlab(tmp_path, "-m", "hydra/launcher=submitit_local", *TINY_SWEEP, "seed=0,1", uri=uri)
    _, runs = runs_of(uri)
    parent = next(r for r in runs if r.data.tags.get("latentlab.sweep") == "parent")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.launcher"] == "LocalLauncher"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in children)


def test_slurm_preset_follows_the_trainer():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from latentlab.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["hydra/launcher=slurm", "trainer=ddp", "trainer.strategy=ddp",
                                 "trainer.num_nodes=2", "trainer.devices=4"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"]) == (2, 4)
    assert launcher["timeout_min"] == 240 and launcher["array_parallelism"] == 64


@pytest.mark.e2e
def test_anomaly_sweep_over_the_normal_class(tmp_path):
    """`latentlab task=anomaly -m anomaly.normal=[0],[1],[0,1]`: one child run per normal set
    in the anomaly experiment, and the parent compares them by AUROC."""
    import mlflow
    import pandas as pd

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = latentlab(tmp_path, "-m", "task=anomaly", *TINY_SWEEP, "anomaly.normal=[0],[1],[0,1]", uri=uri)
    out = r.stdout + r.stderr
    assert out.count("[anomaly_train] wrote") == 3 and "[train]" not in out and "[cluster]" not in out
    client = mlflow.MlflowClient(uri)
    assert client.get_experiment_by_name("latentlab") is None  # nothing in the clustering experiment
    runs = client.search_runs([client.get_experiment_by_name("latentlab-anomaly").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("latentlab.sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.params["anomaly.normal"] for c in children) == ["[0, 1]", "[0]", "[1]"]
    for c in children:
        job_dir = Path(parent.data.tags["sweep.dir"]) / c.data.tags["hydra.job_num"]
        m = json.loads((job_dir / "anomaly/evaluate/metrics.json").read_text())
        assert m["normal_classes"] == json.loads(c.data.params["anomaly.normal"])
        assert c.data.metrics["test/auroc"] == pytest.approx(m["test"]["auroc"]) and m["test"]["auroc"] > 0.6
    best = max(children, key=lambda c: c.data.metrics["test/auroc"])
    assert parent.data.tags["sweep.best_config"] == f"anomaly.normal={best.data.params['anomaly.normal']}"
    assert parent.data.metrics["test/auroc"] == pytest.approx(best.data.metrics["test/auroc"])
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "test_auroc.png", "unbalanced_auprc.png"} <= names
    r = latentlab(tmp_path, "compare", "--task", "anomaly", "--sweep", "latest", "--out", "cmp", uri=uri)
    summary = pd.read_csv(tmp_path / "cmp/summary.csv")
    assert len(summary) == 3 and "unbalanced/f1 mean" in summary.columns


@pytest.mark.e2e
def test_digits_with_the_self_labelling_off_runs_to_the_end(tmp_path):
    """`latentlab data=digits finetune.rounds=0` crashed after ~70 s under the default labels."""
    r = latentlab(tmp_path, "data=digits", "finetune.rounds=0", "train.max_epochs=3", "train.min_steps=0",
                  "trainer.enable_progress_bar=false")
    assert "finetune.rounds=0, the clustering's 1797 assignments unchanged" in r.stdout


@pytest.mark.e2e
def test_the_anomaly_branch_on_a_labelled_table_from_the_command_line(tmp_path):
    from sklearn.datasets import load_breast_cancer

    csv = tmp_path / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(csv, index=False)
    r = latentlab(tmp_path, "data=table", f"data.path={csv}", "data.label=target", "task=anomaly",
                  "anomaly.normal=[1]", "anomaly.max_epochs=5", "trainer.enable_progress_bar=false")
    assert "[anomaly_evaluate] wrote" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.e2e
def test_a_single_run_says_where_to_look_and_predict_applies_its_folder(tmp_path):
    # The demo's path: one `latentlab` run on the bundled digits, then its trained pipeline on
    # new 8x8 images (examples/digits.npy, the set's last 20) through `predict --run <its folder>`.
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    from conftest import ROOT

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = latentlab(tmp_path, "data=digits", "model=mlp", "finetune.views=1", "train.min_steps=0",
                  "train.max_epochs=3", "finetune.epochs=1", "finetune.min_steps=10", "cluster.n_init=2",
                  "evaluate.plot_points=200", "hydra.run.dir=runs/single/demo", uri=uri)
    assert "next:" in r.stdout and "latentlab ui" in r.stdout and "ls runs/single/demo/evaluate/plots/" in r.stdout
    assert "latentlab predict NEW_DATA --run runs/single/demo --out new.csv" in r.stdout
    assert "Tip:" not in r.stdout + r.stderr and "GPU available" not in r.stdout + r.stderr  # Lightning's chatter
    assert "autoencoder: epoch 3/3" in r.stdout  # a plain line per epoch when the output is not a terminal
    digits = ROOT / "examples" / "digits.npy"
    sk = load_digits()
    assert np.array_equal(np.load(digits), np.rint(sk.images[-20:] * 255 / 16).astype(np.uint8))
    p = latentlab(tmp_path, "predict", str(digits), "--run", "runs/single/demo", "--out", "new.csv", uri=uri)
    assert "run folder runs/single/demo" in p.stdout
    new = pd.read_csv(tmp_path / "new.csv")
    assert len(new) == 20 and new["cluster"].between(0, 9).all()
    assert "1797 assignments to 10 clusters (the label count)" in r.stdout  # k: the ten label values
    bad = latentlab(tmp_path, "predict", str(ROOT / "examples/wine.csv"), "--run", "runs/single/demo", "--out",
                    "x.csv", check=False, uri=uri)
    assert bad.returncode == 2 and "digits" in bad.stderr and not (tmp_path / "x.csv").exists()
