"""``latentlab``: the whole pipeline under Hydra, one run or a sweep (``-m``), and ``compare``.

    latentlab model=conv model.latent_dim=16             # one run, outputs in runs/...
    latentlab -m model=mlp,conv model.latent_dim=2,10 seed=0,1,2
    latentlab -m hydra/launcher=joblib hydra.launcher.n_jobs=2 ...   # jobs in parallel
    latentlab compare --sweep latest                     # table and plots of a sweep
    latentlab predict new.csv --out new_assignments.csv  # the trained pipeline on new data
    latentlab ui                                         # the MLflow UI on the project's store, scores in columns
    latentlab exps                                       # DVC experiments: changed params and scores, one screen
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from latentlab.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from latentlab.errors import LatentlabError
    from latentlab.sweep import job

    try:
        return job(cfg)
    except LatentlabError as err:
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            raise  # Hydra records the job as failed; the sweep goes on
        _remove_if_unused(Path(hc.runtime.output_dir))
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _remove_if_unused(folder: Path) -> None:
    """A run refused before any stage wrote a file leaves no folder behind (Hydra made it,
    with its own .hydra/ and log, before the config could be checked)."""
    import shutil

    if folder.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in folder.iterdir()):
        shutil.rmtree(folder)
        for parent in folder.parents:  # runs/single/ too, if this run was its only one
            if parent == Path.cwd() or any(parent.iterdir()):
                break
            parent.rmdir()


def predict_main(argv: list[str]) -> int:
    """``latentlab predict NEW_FILE --out TABLE [--run RUN]``: a trained pipeline applied to new
    data of the kind it was trained on (a table's columns, an array's or images' shape). RUN:
    a `latentlab` run folder (runs/single/<time>), a `dvc repro` workspace, or an MLflow run
    id; by default this project's `dvc repro` outputs."""
    import argparse

    from latentlab import export
    from latentlab.config import project_root
    from latentlab.errors import LatentlabError

    p = argparse.ArgumentParser(prog="latentlab predict", description=predict_main.__doc__)
    p.add_argument("input", type=Path, help="a file (or image folder) like the training data: same columns / shape")
    p.add_argument("--out", type=Path, required=True, help="the table to write (.csv or .parquet)")
    p.add_argument("--run", help="a latentlab run folder, a dvc repro workspace or an MLflow run id "
                                 "(default: this project's dvc repro outputs)")
    a = p.parse_args(argv)
    try:
        run, which = export.find_run(a.run, project_root())
        print(f"{export.predict(a.input, a.out, run)} (the pipeline of {which})")
    except LatentlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def ui_main(argv: list[str]) -> int:
    """``latentlab ui``: MLflow's UI on this project's store (``MLFLOW_TRACKING_URI`` or the
    sqlite file at the root), bound to 127.0.0.1, and the address that opens the runs table
    with the scores and the params that vary in columns (MLflow 3 shows no metric columns
    until they are picked, unless the saved view is named in the address)."""
    import argparse
    import os

    from latentlab import tracking

    p = argparse.ArgumentParser(prog="latentlab ui", description=ui_main.__doc__)
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--experiment", default="latentlab", help="the experiment whose runs table opens")
    a = p.parse_args(argv)
    uri = tracking.tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{a.port}"
    import mlflow
    from mlflow.exceptions import MlflowException

    exp = None
    try:
        exp = mlflow.MlflowClient(uri).get_experiment_by_name(a.experiment)
    except MlflowException as err:  # an unreadable store: the UI itself will say more
        print(f"(could not read {uri}: {err})", file=sys.stderr)
    url = (f"{base}/#/experiments/{exp.experiment_id}/runs?viewStateShareKey={tracking.UI_VIEW_KEY}" if exp
           else f"{base}/#/experiments")
    print(f"MLflow UI: {url}", flush=True)
    if exp:
        print(f"  charts (the train and val loss in one, every score): {url}&compareRunsMode=CHART", flush=True)
    if uri.startswith(("http://", "https://")):
        return 0  # a tracking server already serves its UI
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(a.port)])
    return 0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        from latentlab.compare import main as compare_main

        raise SystemExit(compare_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "predict":
        raise SystemExit(predict_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "ui":
        raise SystemExit(ui_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "exps":
        from latentlab.exps import main as exps_main

        raise SystemExit(exps_main(sys.argv[2:]))
    _check_keys(sys.argv[1:])
    _check_run_folder(sys.argv[1:])
    _hydra_main()


def _check_run_folder(argv: list[str]) -> None:
    """A run folder that cannot be written (a read-only ``runs/``, a full disk) is one line
    and exit 2 before Hydra makes it (its own error is a traceback)."""
    import tempfile

    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    given = [a.split("=", 1)[1] for a in argv if a.startswith(key)]
    target = Path(given[-1] if given else "runs").expanduser()
    folder = target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the part that exists decides whether the rest can be made
    try:
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file")
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        print(f"error: cannot write the run folder {target} ({key.rstrip('=')}): {err.strerror or err} in "
              f"{folder}; make it writable (or free space), or set {key}<another folder>; nothing was run",
              file=sys.stderr)
        raise SystemExit(2) from None


def _check_keys(argv: list[str]) -> None:
    """A typo in a key is one line and exit 2, before Hydra builds anything (its own
    message suggests adding ``+``, which then fails deep inside a constructor)."""
    from latentlab.config import check_keys
    from latentlab.errors import LatentlabError

    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        check_keys(overrides)
    except LatentlabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
