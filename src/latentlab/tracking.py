"""MLflow: where runs go, and logging one pipeline execution as exactly one run.

A DVC pipeline runs as separate processes and may re-run only its downstream
stages. Rather than re-open an earlier run (MLflow params are immutable, so a
changed clustering parameter would fail), the last stage logs a fresh, complete run
from the stage outputs: full config, per-epoch losses, metrics, figures, model.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from latentlab import metric_names as M
from latentlab.config import project_root, task_model
from latentlab.errors import TrackingError

TRACKING_ENV = "MLFLOW_TRACKING_URI"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by
SWEEP_TAG = "latentlab.sweep"      # "parent" on a sweep's parent run
OVERRIDES_TAG = "sweep.overrides"  # on a sweep's parent run: its overrides, as typed after `latentlab -m`
NO_OVERRIDES = "(none)"            # an overrides tag's value when there were none


def tracking_uri(root: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an absolute sqlite store at the root."""
    env = os.environ.get(TRACKING_ENV)
    if env:
        return env
    return f"sqlite:///{project_root(root) / 'mlflow.db'}"


@contextmanager
def store_lock(uri: str | None = None) -> Iterator[None]:
    """Serialise writers of one sqlite store across processes (parallel sweeps, queues).

    sqlite allows one writer at a time: concurrent MLflow clients fail with "database
    is locked" or race on the schema migration. A server store needs no lock.
    """
    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", timeout=900):
        yield


# Each task logs to its own experiment, with only the config sections it reads: a
# clustering run's params never show stale anomaly settings, and vice versa.
TASK_SECTIONS = {"cluster": ("anomaly",),
                 "anomaly": ("protocol", "cluster", "finetune", "dec", "baselines", "evaluate", "export")}
# train keys the anomaly branch does not use: it does not augment, and trains anomaly.max_epochs
NOT_ANOMALY_TRAIN = ("augment", "max_epochs", "min_steps")


def experiment_for(cfg: Mapping[str, Any], task: str) -> str:
    return cfg["tracking"]["experiment" if task == "cluster" else "anomaly_experiment"]


def task_params(cfg: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The config sections a task's run reads, and no other: dvc.yaml lists them as its
    evaluate stage's params (a logged value it does not list would go stale)."""
    params = {k: v for k, v in cfg.items() if k not in ("task", *TASK_SECTIONS[task])}
    if task == "anomaly" and isinstance(params.get("train"), Mapping):
        params["train"] = {k: params["train"][k] for k in params["train"] if k not in NOT_ANOMALY_TRAIN}
    if isinstance(params.get("model"), Mapping):  # the model the run trained (anomaly.model, anomaly.latent_dim)
        params["model"] = task_model(cfg, task)
    if task == "anomaly" and isinstance(params.get("anomaly"), Mapping):
        # logged once, as model.*: anomaly.model.latent_dim would contradict the bottleneck it trained
        params["anomaly"] = {k: v for k, v in params["anomaly"].items() if k != "model"}
    return params


def default_run_name(cfg: Mapping[str, Any], task: str = "cluster") -> str:
    model = task_model(cfg, task)  # the anomaly branch trains its own
    arch = model["_target_"].rsplit(".", 1)[-1].removesuffix("Autoencoder").lower()
    name = f"{cfg['data']['name']}-{arch}-d{model['latent_dim']}"
    if task == "anomaly":
        a = cfg["anomaly"]
        if a["protocol"] == "unsupervised":
            name += "-unsupervised"
        else:
            listed = a["normal"] if a["protocol"] == "one_class" else a["anomalous"]
            which = "-".join(map(str, listed)) if listed is not None else "top"  # top: the most frequent class
            name += f"-{'normal' if a['protocol'] == 'one_class' else 'leftout'}{which}"
    return f"{name}-seed{cfg['seed']}"


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
    """(commit, dirty) of the working copy, or ("unknown", False) outside git. Dirty means a
    tracked file differs from the commit, DVC's own lock and .dvc files aside."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        # dvc.lock (and .dvc files) are rewritten by DVC itself while the pipeline runs: not a user's edit
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     ":(exclude)dvc.lock", ":(exclude,glob)**/*.dvc"], cwd=root,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, dirty


# A new store's "Creating initial MLflow database tables" is MLflow's business, not the user's.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

# The MLflow UI (3.x) opens experiments on its GenAI pages and shows no metric columns
# until the user picks them. These experiment tags make it open on the runs table,
# and `?viewStateShareKey=latentlab` selects the columns a comparison needs.
UI_VIEW_KEY = "latentlab"
_PARAM_COLUMNS = [f"params.`{p}`" for p in ("data.name", "model._target_", "model.latent_dim", "seed")]
UI_COLUMNS = {
    # first what each run hands its user (export.method's scores): one column whichever method it is
    "cluster": ["metrics.`exported/acc`", "metrics.`exported/nmi`", "metrics.`exported/gain_acc`",
                "metrics.`exported/over_raw_acc`", "metrics.`stalled`", "params.`export.method`",
                *(f"metrics.`{m}/acc`" for m in (M.AUTOENCODER_SELFLABEL, M.AUTOENCODER)),
                # deep embedded clustering, filled in runs that turn it on (+experiment=kmeans)
                f"metrics.`{M.AUTOENCODER_DEC}/acc`", f"metrics.`gain/{M.AUTOENCODER_DEC}/acc`",
                f"metrics.`{M.RAW_SELFLABEL}/acc`", f"metrics.`{M.RAW_CLUSTER}/acc`", "metrics.`recon_mse`",
                # what runs of unlabelled data have instead
                f"metrics.`{M.FINAL}/silhouette`", f"metrics.`{M.FINAL}/davies_bouldin`",
                *_PARAM_COLUMNS],
    "anomaly": [*(f"metrics.`{m}`" for m in ("test/auroc", "test/auprc", "unbalanced/auprc", "unbalanced/f1",
                                              "unbalanced/recall_at_fpr")),
                *(f"params.`anomaly.{p}`" for p in ("protocol", "normal", "anomalous", "score", "error")),
                *_PARAM_COLUMNS],
}


# The chart view opens on one chart of the train and the val loss per epoch (MLflow would
# draw a chart per metric key), above the charts MLflow generates for the other metrics.
_LOSS_CHARTS = {
    "isAccordionReordered": True,
    "compareRunSections": [{"uuid": "losses", "name": "reconstruction loss per epoch", "display": True,
                            "isReordered": True, "deleted": False, "isGenerated": False}],
    "compareRunCharts": [
        {"type": "LINE", "uuid": "loss", "metricSectionId": "losses", "metricKey": M.TRAIN_LOSS,
         "selectedMetricKeys": [M.TRAIN_LOSS, M.VAL_LOSS], "displayName": "train and val reconstruction MSE",
         "deleted": False, "isGenerated": False, "runsCountToCompare": 10, "scaleType": "log", "xAxisKey": "step",
         "xAxisScaleType": "linear", "selectedXAxisMetricKey": "", "lineSmoothness": 0, "yAxisKey": "metric",
         "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": False, "useGlobalLineSmoothing": False},
        # the val loss alone would get its own generated chart: it is in the one above
        {"type": "LINE", "uuid": "val-loss-alone", "metricSectionId": "losses", "metricKey": M.VAL_LOSS,
         "deleted": True, "isGenerated": True},
    ],
}


def _ui_tags(task: str) -> dict[str, str]:
    import json

    return {"mlflow.experimentKind": "custom_model_development",
            f"mlflow.sharedViewState.{UI_VIEW_KEY}": json.dumps({"selectedColumns": UI_COLUMNS[task], **_LOSS_CHARTS})}


def ensure_experiment(name: str, root: Path, task: str = "cluster") -> str:
    """Experiment id; a new experiment keeps its artifacts beside the store at the root.

    Call under ``store_lock``: the first call creates the store's schema.
    """
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        for k, v in _ui_tags(task).items():  # a store made by an earlier version gets today's view
            if exp.tags.get(k) != v:
                mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (project_root(root) / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=location, tags=_ui_tags(task))


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_server(root: str | Path | None = None, timeout: float = 5.0) -> None:
    """Before any long work: a tracking server that does not answer is a clear error now,
    not a stack of retries after training. Local stores (sqlite, files) need no check."""
    import urllib.error
    import urllib.request

    uri = tracking_uri(root)
    if not is_remote(uri):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # something answers (a proxy without /health, an auth wall): MLflow will say more
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"the MLflow tracking server {uri} ({TRACKING_ENV}) is unreachable: {reason}. Start it "
            f"(`mlflow server --host 127.0.0.1 ...`), or unset {TRACKING_ENV} to log to the project's "
            "own sqlite store; nothing was run") from None


def log_run(*, cfg: Mapping[str, Any], run_name: str | None = None, history: list[dict[str, float]],
            metrics: Mapping[str, float], artifacts: list[Path | tuple[Path, str]], model, example: np.ndarray,
            tags: Mapping[str, str], root: Path | None = None, run_id: str | None = None,
            task: str = "cluster") -> str:
    """Log one complete run and return its id. The run ends FAILED if any step raises.
    ``artifacts``: files, each at the artifact root (a .png under figures/) or, given as
    (path, folder), in that folder.

    ``run_id`` fills a run opened earlier by ``open_run`` (a sweep job's child run);
    without it a new run is created in the task's experiment.
    """
    root = project_root(root)
    uri = tracking_uri(root)
    with store_lock(uri):
        try:
            if run_id is None:  # a DVC stage at the pipeline's end: the run spans the pipeline
                # named apart from a `latentlab` run of the same config (the demo's, a sweep's)
                run_id = open_run(cfg, task=task, run_name=run_name or f"repro-{default_run_name(cfg, task)}",
                                  root=root, locked=True, start_time=pipeline_started())
            return _log_run(cfg=cfg, history=history, metrics=metrics, artifacts=artifacts,
                            model=model, example=example, tags=tags, root=root, run_id=run_id)
        except Exception as err:
            if not is_remote(uri) or not _connection_lost(err):
                raise
            which = f"run {run_id} is incomplete (RUNNING, some metrics or artifacts missing)" if run_id \
                else "no run was created"
            raise TrackingError(
                f"lost the MLflow tracking server {uri} while logging: {type(err).__name__}: "
                f"{str(err)[:300]}. The pipeline's own outputs are complete on disk; {which}. When the "
                "server is back, `dvc repro` re-runs only this stage and logs a complete run") from err


def _connection_lost(err: BaseException) -> bool:
    """Whether err (or what caused it) is the server not answering, not a bad request."""
    import requests

    while err is not None:
        if isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
            return True
        text = str(err)
        if "Max retries exceeded" in text or "Connection refused" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def pipeline_started() -> int | None:
    """When the `dvc repro` (or `dvc exp run`, or a queued experiment's run) that runs this stage
    started, in ms since the epoch; None outside DVC. The evaluate stage logs its MLflow run at the
    end of the pipeline, and a run's duration should be the pipeline's, not that stage's."""
    import psutil

    try:
        proc = psutil.Process().parent()
        while proc is not None:  # the nearest DVC command above this stage
            argv = proc.cmdline()
            if any(Path(a).name in ("dvc", "dvc.exe") or a.endswith(("/dvc/__main__.py", "-mdvc")) for a in argv[:3]) \
                    and any(a in ("repro", "exec-run", "run") for a in argv):
                return int(proc.create_time() * 1000)
            proc = proc.parent()
    except (psutil.Error, OSError):
        return None
    return None


def _base_tags() -> dict[str, str]:
    # The working copy that runs, which for a queued DVC experiment is its temporary copy.
    commit, dirty = git_commit(Path.cwd())
    tags = {"git_commit": commit, "git_dirty": str(dirty)}
    if os.environ.get("DVC_EXP_NAME"):  # set by DVC for queued experiments
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def _log_run(*, cfg, history, metrics, artifacts, model, example, tags, root, run_id) -> str:
    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri(root))
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.set_tags(dict(tags))
        client = mlflow.MlflowClient()
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step_metrics = [Metric(key=k, value=float(r[k]), timestamp=now, step=int(r["epoch"]))
                        for r in history for k in r if k != "epoch"]
        for i in range(0, len(step_metrics), 1000):
            client.log_batch(run.info.run_id, metrics=step_metrics[i:i + 1000])
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for item in artifacts:  # a path, or (path, the artifact folder it goes in)
            path, folder = item if isinstance(item, tuple) else (item, "figures" if item.suffix == ".png" else None)
            mlflow.log_artifact(str(path), artifact_path=folder)
        import torch

        with torch.inference_mode():
            recon = model(torch.from_numpy(example)).numpy()
        # pt2 (torch.export) needs no pickle and no project code to load; the slim
        # checkpoint beside it rebuilds the full encoder/decoder with latentlab.
        # its notes on the environment it records (uv detected, pip's version unknown) are not the user's concern
        for name in ("mlflow.utils.environment", "mlflow.utils.uv_utils", "mlflow.models.model"):
            logging.getLogger(name).setLevel(logging.ERROR)
        mlflow.pytorch.log_model(model, name="model", signature=infer_signature(example, recon),
                                 input_example=example, serialization_format="pt2",
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        return run.info.run_id


def _create_run(experiment: str, name: str, tags: Mapping[str, str], params: Mapping[str, str], root: Path,
                task: str = "cluster", start_time: int | None = None) -> str:
    """A RUNNING run (started at ``start_time`` ms, default now); call under ``store_lock``."""
    import mlflow

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    exp_id = ensure_experiment(experiment, root, task)
    client = mlflow.MlflowClient(uri)
    run = client.create_run(exp_id, run_name=name, tags={**_base_tags(), **tags}, start_time=start_time)
    if params:
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
    return run.info.run_id


def open_run(cfg: Mapping[str, Any], *, task: str = "cluster", run_name: str | None = None,
             parent_run_id: str | None = None, tags: Mapping[str, str] | None = None, root: Path | None = None,
             locked: bool = False, start_time: int | None = None) -> str:
    """Create a RUNNING run holding the task's config (a sweep job shows up at once) in
    the task's experiment; returns its id. ``start_time``: ms since the epoch, default now."""
    root = project_root(root)
    all_tags = {"task": task, **(tags or {}), **({PARENT_TAG: parent_run_id} if parent_run_id else {})}
    args = (experiment_for(cfg, task), run_name or default_run_name(cfg, task), all_tags,
            flatten(task_params(cfg, task)), root, task, start_time)
    if locked:
        return _create_run(*args)
    with store_lock(tracking_uri(root)):
        return _create_run(*args)


def open_parent(experiment: str, *, name: str, tags: Mapping[str, str], root: Path | None = None,
                task: str = "cluster") -> str:
    """Create the parent run of a sweep (no params: its children differ)."""
    root = project_root(root)
    with store_lock(tracking_uri(root)):
        return _create_run(experiment, name, {SWEEP_TAG: "parent", "task": task, **tags}, {}, root, task)


def close_run(run_id: str, status: str, *, error: str | None = None, artifacts: list[Path] = (),
              metrics: Mapping[str, float] | None = None, tags: Mapping[str, str] | None = None,
              root: Path | None = None) -> None:
    """Mark a run FINISHED / FAILED / KILLED, with the error (if any) as a tag, and last metrics and artifacts."""
    import mlflow

    uri = tracking_uri(project_root(root))
    with store_lock(uri):
        client = mlflow.MlflowClient(uri)
        if error:
            client.set_tag(run_id, "error", error[:4000])
        for k, v in (tags or {}).items():
            client.set_tag(run_id, k, v)
        if metrics:
            client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
                                              for k, v in metrics.items()])
        for path in artifacts:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, status)
