"""What the project promises under faults, checked for real: a training killed with SIGKILL
resumes; an unreachable or lost tracking server, an unwritable folder and a full disk are
one clear error and leave no partial output; malformed configs and dataset files are
refused by name (property-based, with hypothesis). Part of `make test-e2e` (CI runs it);
`pytest -m faults` runs the fault checks alone, with the 20-job sweep against one server in
tests/test_tracking_server.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY, with_value
from latentlab.stages.download import download
from latentlab.stages.common import run
from latentlab.stages.train import train
from latentlab.errors import ConfigError, DataError

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a training killed mid-epoch resumes -----------------------------------------------------------

def _epochs_saved(last: Path) -> int:
    try:
        return torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
    except (OSError, RuntimeError, EOFError, KeyError):  # not there yet, or being written
        return 0


# two trainings of 8 epochs on 6,000 images: about 2 min
def test_a_training_killed_mid_epoch_resumes_from_its_last_checkpoint(tmp_path, mirror):
    from test_pipeline import _copy_project, _dvc, _set

    repo = _copy_project(tmp_path / "repo")
    epochs = 8
    _set(repo / "params.yaml", [*TINY, "data.max_train=6000", f"train.max_epochs={epochs}", f"train.patience={epochs}"])
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "LATENTLAB_DATA_MIRROR": str(mirror),
           "LATENTLAB_CACHE": str(tmp_path / "cache")}
    (tmp_path / "env.json").write_text(json.dumps(env))
    _dvc(repo, "repro", "download")
    last = repo / "outputs" / "train" / ".resume" / "last.ckpt"
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "train"], cwd=repo, start_new_session=True,
                            env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while _epochs_saved(last) < 2:
        assert proc.poll() is None, f"training ended before it could be killed:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
        time.sleep(0.2)
    time.sleep(0.3)  # into the next epoch
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _epochs_saved(last)
    assert 2 <= done < epochs
    # Nothing DVC or a later stage could take for a finished training.
    assert not (repo / "outputs" / "train" / "model.pt").exists()
    assert not (repo / "outputs" / "train" / "history.csv").exists()
    assert "train" in _dvc(repo, "status", "train")

    out = _dvc(repo, "repro", "train")
    assert f"{done} epochs done before the previous run stopped" in out, out
    history = (repo / "outputs" / "train" / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in history] == list(range(epochs))  # every epoch, once
    assert not last.parent.exists()  # cleaned up once finished
    resumed = float(min(r.split(",")[2] for r in history))

    # The same result class as an uninterrupted run of the same config.
    out = _dvc(repo, "repro", "-f", "train")
    assert "resuming" not in out
    history = (repo / "outputs" / "train" / "history.csv").read_text().splitlines()[1:]
    straight = float(min(r.split(",")[2] for r in history))
    assert abs(resumed - straight) / straight < 0.15, (resumed, straight)


# --- the tracking server ---------------------------------------------------------------------------

def test_an_unreachable_tracking_server_fails_before_training(tmp_path, tiny_cfg, mirror, capsys, monkeypatch):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    data = tmp_path / "prepared.npz"
    download(tiny_cfg, data)
    params = tmp_path / "params.yaml"
    import yaml

    params.write_text(yaml.safe_dump(tiny_cfg))
    model = tmp_path / "train" / "model.pt"
    t = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        run(train, data, model, tmp_path / "train" / "history.csv", params=params)
    assert exit_.value.code == 2 and time.monotonic() - t < 30
    err = capsys.readouterr().err
    assert f"the MLflow tracking server {url} (MLFLOW_TRACKING_URI) is unreachable" in err
    assert "Traceback" not in err and not model.exists()


def test_a_sweep_against_an_unreachable_server_is_one_clear_error(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    r = subprocess.run([str(BIN / "latentlab"), "data=digits", "train.max_epochs=1", "train.min_steps=0", "trainer.accelerator=cpu",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "MLFLOW_TRACKING_URI": url}, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "is unreachable" in r.stderr and "Traceback" not in r.stderr


# starts an `mlflow server` (45-60 s on this machine)
def test_a_server_lost_mid_run_names_the_incomplete_run(tmp_path, monkeypatch, tiny_cfg):
    from latentlab import tracking
    from latentlab.errors import TrackingError
    from latentlab.models import MLPAutoencoder

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 's.db'}",
                             "--artifacts-destination", str(tmp_path / "art"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180  # first answer takes 45-60 s on this 2-core machine
        while True:
            try:
                tracking.check_server(timeout=2)
                break
            except TrackingError:
                assert time.monotonic() < deadline and proc.poll() is None, "mlflow server did not come up"
                time.sleep(1)
        run_id = tracking.open_run(tiny_cfg)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the server dies between opening the run and logging it
        proc.wait()
    # Fail fast rather than MLflow's default minutes of retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    net = MLPAutoencoder(input_shape=(1, 28, 28), latent_dim=2, hidden=(8,))
    with pytest.raises(TrackingError) as err:
        tracking.log_run(cfg=tiny_cfg, history=[], metrics={"x": 1.0}, artifacts=[], model=net,
                         example=np.zeros((1, 1, 28, 28), np.float32), tags={}, run_id=run_id)
    msg = str(err.value)
    assert f"run {run_id} is incomplete" in msg and "outputs are complete on disk" in msg


# --- folders and disks -----------------------------------------------------------------------------

def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, tiny_cfg, capsys):
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_cfg))
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the output folder should be")
    t = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        run(download, blocker / "data" / "prepared.npz", params=params)
    assert exit_.value.code == 2 and time.monotonic() - t < 10
    err = capsys.readouterr().err
    assert f"cannot write {blocker / 'data' / 'prepared.npz'} (out)" in err and "nothing was run" in err


@pytest.mark.parametrize("args", [[], ["-m", "seed=0,1"], ["hydra.run.dir={runs}/single/x"]])
def test_an_unwritable_run_folder_is_one_line_before_hydra(tmp_path, monkeypatch, capsys, args):
    from latentlab.cli import _check_run_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where latentlab's run folders should be")
    with pytest.raises(SystemExit) as exit_:
        _check_run_folder([a.format(runs=tmp_path / "runs") for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "error: cannot write the run folder" in err and "nothing was run" in err
    assert ("hydra.sweep.dir" if "-m" in args else "hydra.run.dir") in err
    (tmp_path / "runs").unlink()
    _check_run_folder(args[:1] if "-m" in args else [])  # a folder that does not exist yet is made by Hydra


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: a real full disk (needs root, as CI and this machine have)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_is_one_clear_error_and_leaves_no_partial_file(tmp_path, tiny_cfg, full_disk, capsys):
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_cfg))
    out = full_disk / "prepared.npz"
    with pytest.raises(SystemExit) as exit_:
        run(download, out, params=params)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert list(full_disk.iterdir()) == []  # neither the output nor its temporary file


# --- malformed configs (property-based) ------------------------------------------------------------

def _not_in(choices):
    return st.one_of(st.text(max_size=12), st.integers(), st.none()).filter(lambda v: v not in choices)


BAD_VALUES = {
    "seed": st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=5)),
    "train.batch_size": st.one_of(st.integers(max_value=0), st.floats(), st.booleans()),
    "train.max_epochs": st.one_of(st.integers(max_value=0), st.text(max_size=5)),
    "train.val_fraction": st.floats().filter(lambda v: not 0.0 < v <= 0.5),
    "optimizer.lr": st.floats().filter(lambda v: not 0.0 < v <= 10.0),
    "model.latent_dim": st.integers(max_value=0),
    "cluster.k": st.integers(max_value=1),
    "cluster.umap.n_neighbors": st.integers().filter(lambda v: not 2 <= v <= 1000),
    "cluster.algorithm": _not_in(("kmeans", "gmm")),
    "cluster.assign_rest": _not_in(("neighbors", "transform")),
    "model.activation": _not_in(("relu", "gelu", "elu", "leaky_relu", "tanh", "silu")),
    "finetune.lr_schedule": _not_in(("cosine", "onecycle")),
    "anomaly.error": _not_in(("auto", "mse", "max", "ssim")),
    "protocol": _not_in(("all", "train_test")),
    "model._target_": _not_in(("latentlab.models.MLPAutoencoder", "latentlab.models.ConvAutoencoder")),
}


@pytest.fixture(scope="module")
def base_cfg():
    from omegaconf import OmegaConf

    from latentlab.config import compose

    return OmegaConf.to_container(compose([]), resolve=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_bad_config_value_is_a_config_error_naming_the_key(base_cfg, data):
    from latentlab.config import validate

    key = data.draw(st.sampled_from(sorted(BAD_VALUES)))
    with pytest.raises(ConfigError) as err:
        validate(with_value(base_cfg, key, data.draw(BAD_VALUES[key])))
    assert key in str(err.value)


# --- malformed dataset files (property-based) ------------------------------------------------------

def _idx(magic: int, dims: list[int], body: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + body


def _write_kmnist(raw: Path, files: dict[str, bytes]) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (raw / name).write_bytes(blob)


def _valid_files(n_train: int, n_test: int, rng: np.random.Generator) -> dict[str, bytes]:
    def images(n):
        return _idx(0x803, [n, 28, 28], rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes())

    def labels(n):
        return _idx(0x801, [n], rng.integers(0, 10, n, dtype=np.uint8).tobytes())

    return {"train-images-idx3-ubyte": images(n_train), "train-labels-idx1-ubyte": labels(n_train),
            "t10k-images-idx3-ubyte": images(n_test), "t10k-labels-idx1-ubyte": labels(n_test)}


FAULTS = ("truncate", "magic", "label_count", "image_count", "extra_bytes", "label_range", "empty")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fault=st.sampled_from(FAULTS), which=st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]), cut=st.floats(0.0, 0.999), seed=st.integers(0, 2**16))
def test_malformed_idx_files_are_refused_by_name(tmp_path_factory, fault, which, cut, seed):
    from latentlab import data

    rng = np.random.default_rng(seed)
    n_train, n_test = 30, 20
    files = _valid_files(n_train, n_test, rng)
    blob = files[which]
    images = "images" in which
    n = n_train if which.startswith("train") else n_test
    if fault == "truncate":
        blob = blob[:int(len(blob) * cut)]
    elif fault == "magic":
        blob = struct.pack(">I", int(rng.integers(0, 2**32)) | 0x10000) + blob[4:]
    elif fault == "label_count" and not images:
        blob = _idx(0x801, [n + 1], blob[8:] + b"\x00")
    elif fault == "image_count" and images:
        blob = _idx(0x803, [n - 1, 28, 28], blob[16:16 + (n - 1) * 784])
    elif fault == "extra_bytes":
        blob = blob + b"\x00" * int(rng.integers(1, 100))
    elif fault == "label_range" and not images:
        body = bytearray(blob[8:])
        body[int(rng.integers(0, n))] = int(rng.integers(10, 256))
        blob = blob[:8] + bytes(body)
    elif fault == "empty":
        blob = b""
    else:
        return  # this fault does not apply to this file
    files[which] = blob
    root = tmp_path_factory.mktemp("mirror")
    _write_kmnist(root / "KMNIST" / "raw", files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.UnverifiedDataWarning)
        with pytest.raises(DataError) as err:
            data.prepare("kmnist", mirror=str(root), cache=str(root / "cache"))
    assert "KMNIST" in str(err.value) or which in str(err.value)


def test_well_formed_idx_files_load(tmp_path):
    """The control for the property above: the same builder without a fault is accepted."""
    from latentlab import data

    _write_kmnist(tmp_path / "KMNIST" / "raw", _valid_files(30, 20, np.random.default_rng(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.UnverifiedDataWarning)
        ds = data.prepare("kmnist", mirror=str(tmp_path), cache=str(tmp_path / "cache"))
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)


# --- the same numbers twice ------------------------------------------------------------------------

# two tiny pipelines from scratch: about 5 min
def test_same_config_and_seed_give_identical_metrics_in_two_fresh_copies(tmp_path, mirror):
    from test_pipeline import _copy_project, _dvc, _set

    results = []
    for name in ("a", "b"):
        repo = _copy_project(tmp_path / name / "repo")
        _set(repo / "params.yaml", TINY)
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / name / 'mlflow.db'}",
               "LATENTLAB_DATA_MIRROR": str(mirror), "LATENTLAB_CACHE": str(tmp_path / name / "cache")}
        (tmp_path / name / "env.json").write_text(json.dumps(env))
        _dvc(repo, "repro")
        latents = np.load(repo / "outputs" / "embed" / "latents.npz")
        results.append(((repo / "outputs" / "evaluate" / "metrics.json").read_bytes(),
                        (repo / "outputs" / "anomaly" / "evaluate" / "metrics.json").read_bytes(),
                        {k: latents[k] for k in latents.files}, repo))
    (ma, aa, za, repo), (mb, ab, zb, _) = results
    assert ma == mb and aa == ab  # to the bit
    assert all(np.array_equal(za[k], zb[k]) for k in za)
    # DVC's cache agrees with the workspace: restored outputs need no recomputation.
    _dvc(repo, "checkout", "--force")
    assert "Data and pipelines are up to date" in _dvc(repo, "repro")
