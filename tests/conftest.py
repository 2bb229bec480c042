"""Shared fixtures: the local MNIST mirror, a composed config forced to CPU and tiny sizes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Two test workers on two cores: each worker's torch and numba (and the stage processes it
# starts) take one core's share of threads. With each using every core they spin against each
# other: `make test` took 266 s instead of 210 s (pytest -n 2, this machine). Set before torch loads.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, _share)

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    # test_pipeline.py's module fixture is a real `dvc repro` (100-125 s): first, so that the
    # other worker takes the rest meanwhile instead of idling while it runs last (`make test`
    # keeps this order: --no-loadscope-reorder).
    items.sort(key=lambda item: item.path.name != "test_pipeline.py")
# Tests never touch the network: MNIST comes from the read-only mirror beside the repo.
MIRROR = Path(os.environ.get("LATENTLAB_DATA_MIRROR", ROOT.parent / "shared" / "datasets")).resolve()


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST mirror not found at {MIRROR}; set LATENTLAB_DATA_MIRROR")
    return MIRROR


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, its tables created once per test process: creating them
    costs 3.5-5 s, which every test that logs a run would pay again."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-empty") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def new_store(empty: Path, path: Path) -> str:
    """A real, empty MLflow store at ``path`` (a copy of ``empty_store``): its tracking URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty, path)
    return f"sqlite:///{path}"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path, tmp_path_factory, empty_store):
    # Only the tests that read MNIST need the mirror; without it they fail on its absence
    # (the variable still names it), never by reaching for the network.
    monkeypatch.setenv("LATENTLAB_DATA_MIRROR", str(MIRROR))
    monkeypatch.setenv("LATENTLAB_CACHE", str(tmp_path / "cache"))
    # beside tmp_path, not in it: tests check that tmp_path holds only what they wrote
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_store(empty_store, tmp_path_factory.mktemp("store") / "mlflow.db"))


TINY = [
    "data.max_train=1500", "data.max_test=500", "train.max_epochs=5", "train.min_steps=0", "anomaly.max_epochs=5", "anomaly.min_steps=0", "train.batch_size=64",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "cluster.n_init=2",
    "finetune.epochs=2", "finetune.min_steps=60", "finetune.batch_size=64", "baselines.pca_components=20", "evaluate.plot_points=500", "evaluate.n_images=4",
    "dec.steps=40", "dec.update=20", "dec.batch_size=64",
]


@pytest.fixture
def tiny_cfg():
    """The real composed config, with CPU, tiny data and two epochs."""
    from omegaconf import OmegaConf

    from latentlab.config import compose

    return OmegaConf.to_container(compose(TINY),
                                  resolve=True)


def with_value(cfg: dict, key: str, value) -> dict:
    """A deep copy of a plain config with the dotted ``key`` set to ``value``."""
    import copy

    out = copy.deepcopy(cfg)
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return out


@pytest.fixture(scope="session")
def small(tmp_path_factory, mirror, empty_store):
    """One small real run shared by the in-process stage tests: 1,500 + 500 MNIST images
    prepared, the default (conv) autoencoder trained 5 epochs (at 3 it has not yet beaten
    the mean image), latents, cluster and baseline assignments, both self-labellings and
    (dec.enabled) both DECs, in a session folder. Tests read these files and write their own; ``train_line`` is the
    training's summary line."""
    from omegaconf import OmegaConf

    from latentlab.config import compose
    from latentlab.stages.baselines import baselines
    from latentlab.stages.cluster import cluster
    from latentlab.stages.dec import dec
    from latentlab.stages.download import download
    from latentlab.stages.embed import embed
    from latentlab.stages.finetune import finetune
    from latentlab.stages.raw_dec import raw_dec
    from latentlab.stages.raw_selflabel import raw_selflabel
    from latentlab.stages.train import train

    d = tmp_path_factory.mktemp("small")
    cfg = OmegaConf.to_container(compose([*TINY, "dec.enabled=true"]), resolve=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATENTLAB_DATA_MIRROR", str(mirror))
        mp.setenv("MLFLOW_TRACKING_URI", new_store(empty_store, d / "mlflow.db"))
        p = {k: d / v for k, v in {"data": "prepared.npz", "model": "model.pt", "history": "history.csv",
                                   "latents": "latents.npz", "assignments": "assignments.npz",
                                   "baselines": "baselines.npz", "selflabel": "selflabel.npz",
                                   "classifier": "classifier.pt", "raw_selflabel": "raw_selflabel.npz",
                                   "dec": "dec.npz", "dec_model": "dec.pt", "raw_dec": "raw_dec.npz"}.items()}
        download(cfg, p["data"])
        p["train_line"] = train(cfg, p["data"], p["model"], p["history"])  # its summary line
        embed(cfg, p["data"], p["model"], p["latents"])
        cluster(cfg, p["data"], p["latents"], p["assignments"])
        baselines(cfg, p["data"], p["baselines"])
        finetune(cfg, p["data"], p["model"], p["assignments"], p["latents"], p["selflabel"], p["classifier"])
        raw_selflabel(cfg, p["data"], p["baselines"], p["raw_selflabel"])
        dec(cfg, p["data"], p["model"], p["assignments"], p["dec"], p["dec_model"])
        raw_dec(cfg, p["data"], p["baselines"], p["raw_dec"])
    # what evaluate reads
    p["all"] = [p["assignments"], p["selflabel"], p["baselines"], p["raw_selflabel"], p["dec"], p["raw_dec"]]
    return cfg, p
