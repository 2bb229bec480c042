"""What users take away: one table row per input sample, and the same table for new data.

The table (CSV or Parquet) has the sample's ``id``, its ``cluster`` (by ``export.method``: the
default's best autoencoder method, ``autoencoder_selflabel`` (the encoder trained on its own
clusters), or ``autoencoder_dec`` (the k-means preset's)), its latent coordinates ``z0..z{d-1}``
(the autoencoder's code as trained, before either method trained its encoder further), its
``recon_error`` (the clustering autoencoder's reconstruction MSE: high = unlike the data it
learnt) and ``recon_outlier`` (that error above the threshold that flags
``export.contamination`` of the fitted samples: the stated contamination assumption),
and its ``label`` when the data has labels. The anomaly branch's own detector, trained on
normal samples only, writes its table beside it (outputs/anomaly/rows.csv).

``predict`` applies a trained pipeline to a new file read exactly as the training file
was (the same columns, the stored scaling): on the training rows it reproduces the
pipeline's own table.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from latentlab.errors import ConfigError, DataError
from latentlab.files import atomic

FORMATS = ("csv", "parquet")


def threshold(scores: np.ndarray, contamination: float) -> float:
    """The score above which ``contamination`` of ``scores`` (N,) lie."""
    if not 0.0 < contamination < 0.5:
        raise ConfigError(f"export.contamination must be in (0, 0.5), got {contamination!r}")
    return float(np.quantile(scores, 1.0 - contamination))


def table(ids: np.ndarray, clusters: np.ndarray, z: np.ndarray, score: np.ndarray, thr: float,
          labels: list[str] | None = None):
    """A DataFrame, one row per sample: ids (N,), clusters (N,), z (N, d), score (N,)."""
    import pandas as pd

    df = pd.DataFrame({"id": ids, "cluster": clusters.astype(np.int64)})
    for j in range(z.shape[1]):
        df[f"z{j}"] = z[:, j].astype(np.float32)
    df["recon_error"] = score.astype(np.float64)
    df["recon_outlier"] = score > thr
    if labels is not None:
        df["label"] = labels
    return df


def write(df, path: Path) -> None:
    """CSV or Parquet by the suffix, written atomically."""
    fmt = path.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(f"assignments file {path}: format {fmt!r} is not one of {list(FORMATS)}")
    with atomic(path) as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def _read_like_training(d: Mapping[str, Any], meta: Mapping[str, Any], path: Path):
    """New data read and transformed exactly as the training data (the ``data`` config node
    ``d``, the prepared data's ``meta``) were: (samples, ids). For a built-in image set, a
    folder of images or a .npy / .npz of uint8 images of its shape."""
    from latentlab import sources

    name = d["name"]
    if name not in ("table", "array", "images"):
        c, h, w = meta["image_shape"]
        if Path(path).is_dir():
            src = sources.read_image_folder(path, size=[h, w], channels=c)
        elif Path(path).suffix in (".npy", ".npz"):
            src = sources.read_array(path, key="x")
        else:
            raise DataError(f"{path}: the model was trained on {name} ({c}x{h}x{w} images); give a folder of images "
                            "or a .npy / .npz of uint8 images (N, H, W)")
        if src.x.ndim != 4:
            raise DataError(f"{path} holds feature vectors of shape {tuple(src.x.shape[1:])}; the model was trained "
                            f"on {name} ({c}x{h}x{w} uint8 images)")
    elif name == "table":
        src = sources.read_table(path, features=list(meta["columns"]), id=d["id"])
    elif name == "array":
        src = sources.read_array(path, key=d["key"])
        keep = [int(c[1:]) for c in meta["columns"]]  # x<i>: the columns that were not constant
        if src.x.ndim == 2:
            if src.x.shape[1] <= max(keep):
                raise DataError(f"{path} has {src.x.shape[1]} columns; the model was trained on "
                                f"{len(keep) + len(meta.get('dropped_columns', []))}")
            src.x = src.x[:, keep]
    else:
        src = sources.read_image_folder(path, size=d["size"], channels=d["channels"])
    x = src.x
    if x.ndim == 2:
        x = sources.Scaler.from_dict(meta["scaler"]).transform(x)
    expected = tuple(meta["image_shape"])
    if tuple(x.shape[1:]) != expected:
        raise DataError(f"{path}: samples of shape {tuple(x.shape[1:])}, but the model expects {expected}")
    return x, src.ids


class Run(NamedTuple):
    """The files a trained pipeline is applied from: ``summary`` (the export stage's: the
    method, the threshold, how the data were read), the autoencoder ``model``, the finetune
    stage's ``classifier`` and the dec stage's ``dec_model``; the anomaly branch's
    ``anomaly_model`` and its fitted ``detector`` (scorer and threshold). Any may be absent:
    a clustering-only run has no detector, a ``task=anomaly`` run no summary."""
    summary: Path
    model: Path
    classifier: Path
    dec_model: Path
    anomaly_model: Path = Path("/nonexistent")
    detector: Path = Path("/nonexistent")


def find_run(where: str | None, root: Path) -> tuple[Run, str]:
    """The run ``where`` names, and how to call it: None, the workspace of `dvc repro`
    (``outputs/``) at ``root``; a folder, a ``latentlab`` run's (``runs/single/...``) or a
    workspace; otherwise an MLflow run id, whose artifacts are downloaded."""
    def in_folder(outputs: Path) -> Run:
        return Run(outputs / "export/summary.json", outputs / "train/model.pt", outputs / "finetune/model.pt",
                   outputs / "dec/model.pt", outputs / "anomaly/train/model.pt", outputs / "anomaly/detector.pkl")

    if where is None:
        run = in_folder(root / "outputs")
        if not run.summary.exists() and not run.detector.exists():
            latest = sorted((root / "runs" / "single").glob("*/export/summary.json"))
            hint = (f" (the latest latentlab run: --run {latest[-1].parent.parent.relative_to(root)})" if latest
                    else "")
            raise DataError(f"{run.summary.relative_to(root)} does not exist: run `dvc repro` first, or name a run "
                            f"with --run <run folder or MLflow run id>{hint}")
        return run, "the dvc repro workspace"
    folder = Path(where).expanduser()
    if folder.is_dir():
        outputs = folder / "outputs" if (folder / "outputs").is_dir() else folder
        run = in_folder(outputs)
        if not run.summary.exists() and not run.detector.exists():
            raise DataError(f"--run {where}: no export/summary.json or anomaly/detector.pkl in it; name a "
                            "latentlab run folder (runs/single/<time>) or a dvc repro workspace, after its export "
                            "or anomaly_score stage ran")
        return run, f"run folder {folder}"
    import re

    if not re.fullmatch(r"[0-9a-f]{32}", where):
        raise DataError(f"--run {where!r} is neither a folder nor an MLflow run id (32 hex digits)")
    import mlflow
    from mlflow.exceptions import MlflowException

    from latentlab import tracking

    dest = Path(tempfile.mkdtemp(prefix="latentlab-predict-"))
    try:
        client = mlflow.MlflowClient(tracking.tracking_uri(root))
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # four small files: no bars

        def fetch(name: str) -> str:  # each into a folder of its own: two are named model.pt
            (dest / name.replace("/", "_")).mkdir()
            return client.download_artifacts(where, name, str(dest / name.replace("/", "_")))

        files = {name: fetch(name) for name in ("summary.json", "model.pt", "finetune/model.pt")}
        try:
            files["dec/model.pt"] = fetch("dec/model.pt")
        except (MlflowException, OSError):  # only runs with dec.enabled log one
            files["dec/model.pt"] = str(dest / "dec" / "model.pt")
    except (MlflowException, OSError) as err:
        raise DataError(f"--run {where}: cannot fetch its trained pipeline from {tracking.tracking_uri(root)} "
                        f"({str(err)[:200]}); runs logged before predict could use them lack summary.json") from None
    return Run(*(Path(files[n]) for n in ("summary.json", "model.pt", "finetune/model.pt", "dec/model.pt"))), \
        f"MLflow run {where}"


def predict(input_path: Path, out: Path, run: Run) -> str:
    """A trained pipeline on a new file (same format as data.path). Clustering (the export's
    ``summary``): assignments by the method the export used (the finetune stage's
    ``classifier`` or the dec stage's ``dec_model``), latents, reconstruction error. Anomaly
    branch (its ``detector``): ``anomaly_score`` and ``anomaly_flagged``, the one-class scorer
    and threshold the branch fitted on normal samples. Either alone when the run has only one."""
    import pandas as pd

    from latentlab import dec, finetune, models
    from latentlab.anomaly import Detector, skipped_reason

    info = json.loads(Path(run.summary).read_text()) if Path(run.summary).exists() else None
    det = None
    if Path(run.detector).exists() and skipped_reason(run.detector) is None:
        det = Detector.load(run.detector)
    if info is None and det is None:
        reason = skipped_reason(run.detector) if Path(run.detector).exists() else None
        raise DataError(f"{run.summary} does not exist" + (f" and the anomaly branch was skipped ({reason})"
                                                             if reason else ""))
    if info is not None and "data" not in info:
        raise DataError(f"{run.summary} predates predict's self-contained runs: re-run the pipeline")
    data, meta = (info["data"], info["meta"]) if info is not None else (det.data, det.meta)
    x, ids = _read_like_training(data, meta, Path(input_path))
    said = []
    if info is not None:
        method = info["method"]
        model, classifier, dec_model = run.model, run.classifier, run.dec_model
        needed = dec_model if method == "autoencoder_dec" else classifier
        for f in (model, needed):
            if not Path(f).exists():
                raise DataError(f"{f} does not exist: the run has no trained {method} model (finetune.rounds=0 trains "
                                "no classifier: re-run with finetune.rounds >= 1, or export.method=autoencoder_dec)")
        z, mse = models.encode(models.load(model), x, desc="encoding")
        if method == "autoencoder_dec":
            clusters = dec.load(dec_model).predict(x)
        else:
            clusters = finetune.predict_proba(finetune.load(classifier), x,
                                              **finetune.relabel_args(classifier)).argmax(1)
        df = table(ids, clusters, z, mse, info["threshold"])
        said.append(f"{df['cluster'].nunique()} {method} clusters, {int(df['recon_outlier'].sum())} with a "
                    f"reconstruction error above the threshold {info['threshold']:.4g}")
    else:
        df = pd.DataFrame({"id": ids})
    if det is not None:
        scores = det.score(models.load(run.anomaly_model), x)
        df["anomaly_score"] = scores
        df["anomaly_flagged"] = scores > det.scorer.threshold_
        said.append(f"{int(df['anomaly_flagged'].sum())} flagged by the anomaly branch's detector "
                    f"(threshold {det.scorer.threshold_:.4g})")
    write(df, Path(out))
    return f"wrote {out}: {len(df)} rows, " + "; ".join(said)
