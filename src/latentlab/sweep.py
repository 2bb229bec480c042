"""The whole pipeline in one process, for Hydra sweeps, and the sweep's MLflow parent run.

DVC runs the stages as separate processes and caches their outputs; a Hydra sweep
runs the same stage functions back to back in each job, in the job's own folder. The
stages, their order, inputs and params come from ``dvc.yaml`` (``latentlab.dag``), not
from a copy here. What every job of a sweep computes alike (``SHARED``: the prepared
dataset, the raw-input baselines) is computed once into a cache shared by all jobs and
sweeps, keyed by the params the stage reads, its inputs' keys and a fingerprint of the
code it runs, under a file lock so that parallel jobs wait rather than race.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import inspect
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from latentlab import dag, tracking
from latentlab.config import check_overrides, project_root, validate
from latentlab.stages.common import parse_args, timed

PARENT_FILE = "mlflow_parent_run_id"
CACHE_ENV = "LATENTLAB_SWEEP_CACHE"
# The last stage of each task's branch: the runner runs it and every stage it needs.
TARGETS = {"cluster": "evaluate", "anomaly": "anomaly_evaluate"}
# Stages that read neither the model nor its params (the raw baselines): computed once per key for every job.
SHARED = ("download", "baselines", "raw_selflabel", "raw_dec")
# Where the files come from does not change them (they are checksummed): not part of a key.
NOT_IN_KEY = ("data.mirror", "data.cache")


def cache_dir() -> Path:
    """Shared outputs of sweeps: ``$LATENTLAB_SWEEP_CACHE`` or ``<root>/data/cache``."""
    return Path(os.environ.get(CACHE_ENV) or project_root() / "data" / "cache")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _param_values(cfg: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    values = {}
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        if isinstance(node, Mapping):
            node = {k: v for k, v in node.items() if f"{key}.{k}" not in NOT_IN_KEY}
        values[key] = node
    return values


def _file_key(path: str, root: Path) -> Any:
    """A data dependency's identity: a file's size and mtime, a folder's listing of them."""
    p = root / path
    if p.is_dir():
        return sorted((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns)
                      for f in p.rglob("*") if f.is_file())
    return [p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else None


def stage_key(stage: dag.Stage, cfg: Mapping[str, Any], inputs: Mapping[str, str], root: Path) -> str:
    """What a shared stage's output depends on: its params' values, the keys of the stage
    outputs it reads, its other data deps, and the code it runs."""
    data_deps = [d for d in stage.deps if d not in inputs and not d.endswith(".py")]
    return _hash([stage.name, _param_values(cfg, stage.params), sorted(inputs.items()),
                  {d: _file_key(d, root) for d in data_deps}, dag.fingerprint(stage.module)])


def _cached(path: Path, make) -> Path:
    """``make(path)`` unless another job already did; concurrent callers wait for the first.
    The lock file goes once the output is there: a failure leaves neither behind."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(f"{path}.lock")
    try:
        with FileLock(lock):
            if not path.exists():
                make(path)
            else:
                print(f"[cache] reusing {path}", flush=True)
    finally:
        # A job still waiting holds the old file open and finds the output there; the worst a
        # race costs is computing it twice (outputs are written atomically).
        lock.unlink(missing_ok=True)
    return path


def run_pipeline(cfg: Mapping[str, Any], workdir: str | Path, *, parent_run_id: str | None = None,
                 tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The branch ``cfg["task"]`` names, in ``workdir``: the stages ``dvc.yaml`` gives for
    it, in its order, each called in this process with the job's paths.

    The job's MLflow run is opened first (it shows up in the UI while training) and
    ends FAILED, with the error as a tag, if any stage raises. Returns metrics.json.
    """
    validate(cfg)
    tracking.check_server()
    root = project_root()  # where relative data paths are
    stages = dag.order(dag.load(dag.ROOT, cfg), TARGETS[cfg["task"]])
    run_id = tracking.open_run(cfg, task=cfg["task"], parent_run_id=parent_run_id, tags=tags)
    try:
        metrics = _run_stages(stages, cfg, Path(workdir), cache_dir(), root, run_id)
    except BaseException as err:
        tracking.close_run(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED",
                           error=f"{type(err).__name__}: {err}")
        raise
    return json.loads(metrics.read_text())


def _run_stages(stages: list[dag.Stage], cfg: Mapping[str, Any], workdir: Path, cache: Path, root: Path,
                run_id: str) -> Path:
    """Each stage's flags, with dvc.yaml's paths moved: a shared stage's outputs into the
    cache under its key, every other ``outputs/...`` path into the job's folder."""
    where: dict[str, str] = {}   # dvc.yaml path -> this job's path
    keys: dict[str, str] = {}    # a shared output's dvc.yaml path -> its key
    metrics = None

    def in_job(path: str) -> str:  # dvc.yaml's outputs/... -> the job's folder
        return str(workdir / Path(path).relative_to("outputs")) if path.startswith("outputs/") else path

    for stage in stages:
        fn = getattr(importlib.import_module(stage.module), stage.name)
        if stage.name in SHARED:
            key = stage_key(stage, cfg, {d: keys[d] for d in stage.deps if d in keys}, root)
            for o in stage.outs:
                name = Path(o)
                where[o] = str(cache / f"{stage.name}-{name.stem}-{key}{name.suffix}")
                keys[o] = key
        else:
            where.update({o: in_job(o) for o in stage.outs})
        argv = []
        for flag, values in stage.args.items():
            moved = [where.get(v) or in_job(v) for v in values]
            argv += [f"--{flag.replace('_', '-')}", *moved]
        kwargs = parse_args(fn, argv)
        if "run_id" in inspect.signature(fn).parameters:
            kwargs["run_id"] = run_id
        if stage.name in SHARED:
            first = Path(where[stage.outs[0]])
            _cached(first, lambda _p, fn=fn, kwargs=kwargs: timed(fn, cfg, **kwargs))
        else:
            timed(fn, cfg, **kwargs)
        metrics = next((Path(where[o]) for o in stage.outs if o.endswith("metrics.json")), metrics)
    if metrics is None:
        raise RuntimeError(f"no stage of {[s.name for s in stages]} writes a metrics.json")
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
            tags={tracking.OVERRIDES_TAG: " ".join(overrides) or tracking.NO_OVERRIDES, "sweep.dir": str(sweep_dir),
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
            compared, rank_by = compare.TASK_METRICS[self.task]
            report = compare.compare(parent_run_id=parent, experiment=self.experiment, metrics=compared,
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
    tags = {"hydra.overrides": " ".join(hc.overrides.task) or tracking.NO_OVERRIDES}
    if hc.mode == RunMode.MULTIRUN:
        parent_file = Path(hc.sweep.dir) / PARENT_FILE
        parent = parent_file.read_text().strip() if parent_file.exists() else None
        tags["hydra.job_num"] = str(hc.job.num)
        _share_cores(hc)
    t = time.perf_counter()
    metrics = run_pipeline(plain, hc.runtime.output_dir, parent_run_id=parent, tags=tags)
    print(f"[job {hc.job.num if hc.mode == RunMode.MULTIRUN else 0}] {' '.join(hc.overrides.task)}: "
          f"done in {time.perf_counter() - t:.0f}s", flush=True)
    if hc.mode != RunMode.MULTIRUN:
        print(next_steps(Path(hc.runtime.output_dir), plain["task"]), flush=True)
    return metrics


def next_steps(folder: Path, task: str) -> str:
    """Where a finished single run's results are, and what to do with them."""
    try:
        shown = folder.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = folder
    plots = shown / ("evaluate" if task == "cluster" else "anomaly/evaluate") / "plots"
    lines = ["next:",
             "  latentlab ui    # this run beside the others, in MLflow",
             f"  ls {plots}/    # its figures"]
    if task == "cluster":
        lines.append(f"  latentlab predict NEW_DATA --run {shown} --out new.csv   # its trained pipeline on new data")
    return "\n".join(lines)


def _share_cores(hc: Any) -> None:
    """Parallel jobs split the cores instead of each taking them all (oversubscription)."""
    n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=None)
    if n_jobs is None:
        return
    import torch

    cores = os.cpu_count() or 1
    n_jobs = cores if n_jobs < 0 else n_jobs  # joblib: -1 means one per core
    torch.set_num_threads(max(1, cores // max(1, n_jobs)))
