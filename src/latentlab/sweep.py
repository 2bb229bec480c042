"""The whole pipeline in one process, for Hydra sweeps, and the sweep's MLflow parent run.

DVC runs the stages as separate processes and caches their outputs; a Hydra sweep
runs them back to back in each job, in the job's own folder, calling the same
functions in ``latentlab.stages``. What every job of a sweep would compute alike (the
prepared dataset; the raw-pixel baselines for a seed) is computed once into a cache
shared by all jobs and sweeps, under a file lock so that parallel jobs wait rather
than race.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from latentlab import stages, tracking
from latentlab.config import check_overrides, project_root, validate

PARENT_FILE = "mlflow_parent_run_id"
CACHE_ENV = "LATENTLAB_SWEEP_CACHE"


def cache_dir() -> Path:
    """Shared outputs of sweeps: ``$LATENTLAB_SWEEP_CACHE`` or ``<root>/data/cache``."""
    return Path(os.environ.get(CACHE_ENV) or project_root() / "data" / "cache")


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(path: Path, make: Callable[[Path], Any]) -> Path:
    """``make(path)`` unless another job already did; concurrent callers wait for the first."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if not path.exists():
            make(path)
        else:
            print(f"[cache] reusing {path}", flush=True)
    return path


def data_key(cfg: Mapping[str, Any]) -> str:
    # Where the files come from does not change them: they are checksummed.
    d = {k: v for k, v in cfg["data"].items() if k not in ("mirror", "cache")}
    return f"{cfg['data']['name']}-{_key(d)}"


def run_pipeline(cfg: Mapping[str, Any], workdir: str | Path, *, parent_run_id: str | None = None,
                 tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The branch ``cfg["task"]`` names, in ``workdir``: download -> train -> embed ->
    cluster -> finetune, baselines -> evaluate; or download -> anomaly_train -> anomaly_score ->
    anomaly_evaluate.

    The job's MLflow run is opened first (it shows up in the UI while training) and
    ends FAILED, with the error as a tag, if any stage raises. Returns metrics.json.
    """
    validate(cfg)
    tracking.check_server()
    task = cfg["task"]
    out = Path(workdir)
    run_id = tracking.open_run(cfg, task=task, parent_run_id=parent_run_id, tags=tags)
    try:
        cache = cache_dir()
        dkey = data_key(cfg)
        data = _cached(cache / f"prepared-{dkey}.npz", lambda p: stages.timed(stages.download, cfg, p))
        metrics = (_cluster if task == "cluster" else _anomaly)(cfg, data, out, cache, dkey, run_id)
    except BaseException as err:
        tracking.close_run(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED",
                           error=f"{type(err).__name__}: {err}")
        raise
    return json.loads(metrics.read_text())


def _cluster(cfg: Mapping[str, Any], data: Path, out: Path, cache: Path, dkey: str, run_id: str) -> Path:
    model, history = out / "train" / "model.pt", out / "train" / "history.csv"
    latents = out / "embed" / "latents.npz"
    assignments = out / "cluster" / "assignments.npz"
    # What the baselines read of `cluster` (dvc.yaml lists the same keys for the stage).
    km = {k: cfg["cluster"][k] for k in ("k", "n_init", "max_iter", "umap", "algorithm", "covariance_type",
                                         "minibatch_above", "max_fit", "assign_rest", "select_k", "k_range")}
    base_key = _key(dkey, cfg["seed"], cfg["protocol"], km, cfg["baselines"])
    baselines = _cached(cache / f"baselines-{base_key}.npz", lambda p: stages.timed(stages.baselines, cfg, data, p))
    stages.timed(stages.train, cfg, data, model, history)
    stages.timed(stages.embed, cfg, data, model, latents)
    stages.timed(stages.cluster, cfg, latents, assignments)
    finetuned = out / "finetune" / "assignments.npz"
    stages.timed(stages.finetune, cfg, data, model, assignments, latents, finetuned, out / "finetune" / "model.pt",
                 baselines)
    exported = out / "export" / f"assignments.{cfg['export']['format']}"
    stages.timed(stages.export, cfg, data, latents, finetuned, exported, out / "export" / "summary.json")
    metrics = out / "evaluate" / "metrics.json"
    stages.timed(stages.evaluate, cfg, data, model, history, latents, [assignments, finetuned, baselines],
                 metrics, out / "evaluate" / "plots", run_id=run_id, exported=exported)
    return metrics


def _anomaly(cfg: Mapping[str, Any], data: Path, out: Path, cache: Path, dkey: str, run_id: str) -> Path:
    out = out / "anomaly"
    model, history = out / "train" / "model.pt", out / "train" / "history.csv"
    scores = out / "scores.npz"
    metrics = out / "evaluate" / "metrics.json"
    stages.timed(stages.anomaly_train, cfg, data, model, history)
    stages.timed(stages.anomaly_score, cfg, data, model, scores)
    stages.timed(stages.anomaly_evaluate, cfg, data, model, history, scores, metrics, out / "evaluate" / "plots",
                 out / "evaluate", run_id=run_id)
    return metrics


class MLflowSweep(Callback):
    """Opens a parent run when a Hydra multirun starts; closes it with the comparison.

    Jobs find the parent's id in ``<sweep dir>/mlflow_parent_run_id``: a file works for
    every launcher (in-process, joblib workers, SLURM nodes on a shared filesystem).
    """

    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.sweep_dir: Path | None = None
        self.experiment: str | None = None
        self.task = "cluster"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        self.task = config.task
        self.experiment = tracking.experiment_for(config, self.task)
        self.parent_id = tracking.open_parent(
            self.experiment, name=f"sweep-{sweep_dir.name}", task=self.task,
            tags={"sweep.overrides": " ".join(overrides) or "(none)", "sweep.dir": str(sweep_dir),
                  "sweep.launcher": str(config.hydra.launcher._target_).rsplit(".", 1)[-1]})
        self.sweep_dir = sweep_dir
        (sweep_dir / PARENT_FILE).write_text(self.parent_id + "\n")
        print(f"[sweep] MLflow parent run {self.parent_id} at {tracking.tracking_uri()}; jobs in {sweep_dir}",
              flush=True)
        # Hydra skips on_multirun_end when a job fails: close the parent anyway.
        atexit.register(self._close, "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        if self.parent_id is None:
            return
        parent, self.parent_id = self.parent_id, None
        from latentlab import compare

        artifacts: list[Path] = []
        metrics, tags = None, None
        try:
            metrics, rank_by = compare.TASK_METRICS[self.task]
            report = compare.compare(parent_run_id=parent, experiment=self.experiment, metrics=metrics,
                                     rank_by=rank_by, out_dir=self.sweep_dir / "compare")
            artifacts = report.files
            # The parent's row in the UI shows the best configuration's mean over seeds.
            metrics, tags = report.best_config, {"sweep.best_config": report.best_config_name}
            print(report.text, flush=True)
            if report.failed:
                status = "FAILED"
        except compare.NothingToCompare as err:
            print(f"[sweep] {err}", flush=True)
            status = "FAILED"
        tracking.close_run(parent, status, artifacts=artifacts, metrics=metrics, tags=tags)
        print(f"[sweep] parent run {parent} {status}; comparison in {self.sweep_dir / 'compare'}", flush=True)


def job(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job: the pipeline in the job's folder, a child run when in a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    plain = OmegaConf.to_container(cfg, resolve=True)
    check_overrides(plain, list(hc.overrides.task))
    parent = None
    tags = {"hydra.overrides": " ".join(hc.overrides.task) or "(none)"}
    if hc.mode == RunMode.MULTIRUN:
        parent_file = Path(hc.sweep.dir) / PARENT_FILE
        parent = parent_file.read_text().strip() if parent_file.exists() else None
        tags["hydra.job_num"] = str(hc.job.num)
        _share_cores(hc)
    t = time.perf_counter()
    metrics = run_pipeline(plain, hc.runtime.output_dir, parent_run_id=parent, tags=tags)
    print(f"[job {hc.job.num if hc.mode == RunMode.MULTIRUN else 0}] {' '.join(hc.overrides.task)}: "
          f"done in {time.perf_counter() - t:.0f}s", flush=True)
    return metrics


def _share_cores(hc: Any) -> None:
    """Parallel jobs split the cores instead of each taking them all (oversubscription)."""
    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=None)
    if n_jobs is None:
        return
    import torch

    cores = os.cpu_count() or 1
    n_jobs = cores if n_jobs < 0 else n_jobs  # joblib: -1 means one per core
    torch.set_num_threads(max(1, cores // max(1, n_jobs)))
