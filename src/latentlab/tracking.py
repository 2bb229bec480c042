"""MLflow: where runs go, and logging one pipeline execution as exactly one run.

A DVC pipeline runs as separate processes and may re-run only its downstream
stages. Rather than re-open an earlier run (MLflow params are immutable, so a
changed clustering parameter would fail), the last stage logs a fresh, complete run
from the stage outputs: full config, per-epoch losses, metrics, figures, model.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlab.config import project_root

TRACKING_ENV = "MLFLOW_TRACKING_URI"


def tracking_uri(root: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an absolute sqlite store at the root."""
    env = os.environ.get(TRACKING_ENV)
    if env:
        return env
    return f"sqlite:///{project_root(root) / 'mlflow.db'}"


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.latent_dim": "10", ...} (lists stay whole)."""
    out: dict[str, str] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = str(v)
    return out


def git_commit(root: Path) -> tuple[str, bool]:
    """(commit, dirty) of the working copy, or ("unknown", False) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, dirty


def ensure_experiment(name: str, root: Path) -> str:
    """Experiment id; a new experiment keeps its artifacts beside the store at the root."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (project_root(root) / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def log_run(*, cfg: Mapping[str, Any], run_name: str, history: list[dict[str, float]],
            metrics: Mapping[str, float], artifacts: list[Path], model, example: np.ndarray,
            tags: Mapping[str, str], root: Path | None = None) -> str:
    """Log one complete run and return its id. The run ends FAILED if any step raises."""
    import mlflow
    from mlflow.models import infer_signature

    root = project_root(root)
    mlflow.set_tracking_uri(tracking_uri(root))
    exp_id = ensure_experiment(cfg["tracking"]["experiment"], root)
    commit, dirty = git_commit(root)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        mlflow.set_tags({"git_commit": commit, "git_dirty": str(dirty), **tags})
        mlflow.log_params(flatten(cfg))
        client = mlflow.MlflowClient()
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step_metrics = [Metric(key=k, value=float(r[k]), timestamp=now, step=int(r["epoch"]))
                        for r in history for k in r if k != "epoch"]
        for i in range(0, len(step_metrics), 1000):
            client.log_batch(run.info.run_id, metrics=step_metrics[i:i + 1000])
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="figures" if path.suffix == ".png" else None)
        import torch

        with torch.inference_mode():
            recon = model(torch.from_numpy(example)).numpy()
        # pt2 (torch.export) needs no pickle and no project code to load; the slim
        # checkpoint beside it rebuilds the full encoder/decoder with latentlab.
        mlflow.pytorch.log_model(model, name="model", signature=infer_signature(example, recon),
                                 input_example=example, serialization_format="pt2",
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        return run.info.run_id
