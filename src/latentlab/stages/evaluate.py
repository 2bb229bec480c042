"""Stage `evaluate`: score every method, draw the figures, log the execution as one MLflow run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentlab import history as history_file
from latentlab import metric_names as M
from latentlab import clustering, metrics, models, plots, tracking
from latentlab.data import Prepared
from latentlab.errors import LatentlabError
from latentlab.files import atomic_dir, write_json
from latentlab.models import to_float
from latentlab.stages.common import main, scored


def evaluate(cfg: Mapping[str, Any], data: Path, model: Path, history: Path, latents: Path,
             assignments: list[Path], metrics_out: Path, scores_dir: Path, plots_dir: Path,
             exported: Path | None = None, classifier: Path | None = None, dec_model: Path | None = None,
             export_summary: Path | None = None, run_id: str | None = None) -> str:
    """Score every method, draw the figures, and log the whole execution as one MLflow run.

    ``metrics_out``: every score of every method, each autoencoder method's gain over its raw
    twin (``gain``), its margin over the strongest raw method (``over_raw``) and the scores
    of the method the export stage exported (``exported``: export.method's, so that runs
    with different export methods rank by what each hands its user).
    ``scores_dir``: one small file per method (its headline scores and, for an autoencoder
    method, the gain over its raw twin), DVC's metrics: `dvc metrics show` prints a row per method.
    ``exported``: the export stage's table, logged as an artifact; ``classifier`` (the
    finetune stage's) and ``dec_model`` (the dec stage's, when dec.enabled): what `latentlab
    predict` assigns new data with, logged under finetune/ and dec/ as the pipeline writes them.
    ``run_id``: fill this open run (a sweep job's) instead of creating one.
    """
    tracking.check_server()
    protocol = cfg["protocol"]
    ds = Prepared.load(data)
    x_fit, _, x_score, y = ds.split(protocol)
    labels: dict[str, np.ndarray] = {}
    for path in assignments:
        with np.load(path) as a:
            labels.update({k: a[k] for k in a.files})
    missing = [m for m in M.METHODS if m not in labels and m not in M.OPTIONAL]
    methods = [m for m in M.METHODS if m in labels]  # the optional ones when their stages ran
    twins = {m: t for m, t in M.TWINS.items() if m in labels and t in labels}
    if missing:
        raise LatentlabError(f"assignments for {missing} not found in {[str(p) for p in assignments]}")
    with np.load(latents) as z:
        z_score = scored(protocol, z["z_train"], z["z_test"])
        mse_score = scored(protocol, z["mse_train"], z["mse_test"])
    if len(y) != len(labels[M.AUTOENCODER]) or len(y) != len(z_score):
        raise LatentlabError(f"stage outputs disagree: {len(y)} labels, {len(z_score)} latents, "
                             f"{len(labels[M.AUTOENCODER])} assignments; re-run `dvc repro`")

    result: dict[str, Any] = {"protocol": protocol, "n_scored": int(len(y)), "labelled": ds.labelled,
                              "recon_mse": float(mse_score.mean())}
    # Label-free quality is judged in one space that no autoencoder shapes (a PCA of the
    # inputs), so that every method and every run of a sweep compare.
    common = metrics.common_space(x_score, seed=cfg["seed"])
    for m in methods:
        result[m] = {**(metrics.scores(y, labels[m]) if ds.labelled else {}),
                     **metrics.label_free(common, labels[m], seed=cfg["seed"]),
                     "n_clusters": int(len(np.unique(labels[m])))}
    if ds.labelled:  # what the latent space bought: each autoencoder method against its raw twin
        result["gain"] = {m: {"twin": twin, **{s: result[m][s] - result[twin][s] for s in ("acc", "nmi")}}
                          for m, twin in twins.items()}
        # and against the strongest method that uses no autoencoder (a twin can be the weaker one)
        raws = [m for m in methods if M.is_raw(m)]
        best = {s: max(raws, key=lambda r: result[r][s]) for s in ("acc", "nmi")}
        result["over_raw"] = {m: {**{s: result[m][s] - result[best[s]][s] for s in ("acc", "nmi")},
                                  **{f"best_raw_{s}": best[s] for s in ("acc", "nmi")}}
                              for m in methods if not M.is_raw(m)}
        chosen = cfg["export"]["method"]
        found = metrics.mistakes(y, labels[chosen])
        result["exported"] = {"method": chosen, **{s: result[chosen][s] for s in ("acc", "nmi")},
                              "mistakes": [{k: v for k, v in m.items() if k != "index"} for m in found]}
    hist = history_file.read(history)
    mean_mse = models.mean_sample_mse(x_fit, x_score)
    result["train"] = {"epochs": len(hist), "best_val_recon_loss": min(r[M.VAL_LOSS] for r in hist),
                       "mean_sample_mse": mean_mse, "stalled": models.stalled(result["recon_mse"], mean_mse)}

    rng = np.random.default_rng(cfg["seed"])
    pick = rng.choice(len(y), size=min(len(y), cfg["evaluate"]["plot_points"]), replace=False)
    z2 = clustering.map_2d(z_score[pick], seed=cfg["seed"])
    net = models.load(model)
    shown = x_score[rng.choice(len(x_score), size=min(len(x_score), cfg["evaluate"]["n_images"]), replace=False)]
    with torch.inference_mode():
        originals = to_float(torch.from_numpy(shown))
        recons = net(originals).numpy()
    reference = y[pick] if ds.labelled else labels[M.FINAL][pick]
    with atomic_dir(plots_dir) as tmp:  # every figure, or none: a failed plot leaves the old folder
        drawn = [
            plots.latent_map(z2, reference, labels[M.AUTOENCODER][pick], tmp / "latent_umap.png",
                             reference_name="true label" if ds.labelled else f"{M.FINAL} cluster"),
            plots.loss_curve(hist, tmp / "loss_curve.png"),
        ]
        if ds.labelled:
            drawn.append(plots.twin_bars(plots.twin_rows([result], twins), tmp / "twins.png"))
        if ds.is_images:
            drawn.append(plots.reconstruction_grid(originals.numpy(), recons, tmp / "reconstructions.png"))
        if ds.labelled and ds.is_images and found:
            drawn.append(plots.mistakes(
                x_score, found, tmp / "mistakes.png",
                f"{chosen} (exported): its most frequent mistakes, ACC {result[chosen]['acc']:.4f}"))
        for m in methods if ds.labelled else ():
            s = result[m]
            drawn.append(plots.contingency_heatmap(
                metrics.contingency(y, labels[m]), tmp / f"contingency_{m}.png",
                f"{m}: ACC {s['acc']:.3f}, NMI {s['nmi']:.3f}"))
    figures = [plots_dir / p.name for p in drawn]
    with atomic_dir(scores_dir) as tmp:
        for m in methods:
            write_json(tmp / f"{m}.json", headline(result, m))
    write_json(metrics_out, result)

    stall = (f"STALLED: the autoencoder reconstructs no better than the mean sample (MSE {result['recon_mse']:.4f} "
             f"vs {mean_mse:.4f}), so its latents carry little | " if result["train"]["stalled"] else "")
    summary = stall + " | ".join([*(_line(result, m, ds.labelled) for m in methods), *_lead(result)])
    flat = {f"{m}/{k}": v for m in methods for k, v in result[m].items()}
    flat.update({f"gain/{m}/{s}": g[s] for m, g in result.get("gain", {}).items() for s in ("acc", "nmi")})
    flat.update({f"over_raw/{m}/{s}": g[s] for m, g in result.get("over_raw", {}).items() for s in ("acc", "nmi")})
    flat.update({f"exported/{s}": result["exported"][s] for s in ("acc", "nmi") if "exported" in result})
    chosen = cfg["export"]["method"]
    if chosen in result.get("gain", {}):  # short keys the runs table shows first: the exported method against its twin
        flat["exported/gain_acc"] = result["gain"][chosen]["acc"]
        flat["exported/over_raw_acc"] = result["over_raw"][chosen]["acc"]
    # 4 decimals: what the scores of a few thousand samples can tell apart, and what fits a table's column
    flat = {k: round(float(v), 4) if k.split("/")[-1] in SCORE_KEYS else v for k, v in flat.items()}
    flat.update({"recon_mse": result["recon_mse"], "best_val_recon_loss": result["train"]["best_val_recon_loss"],
                 "epochs": result["train"]["epochs"], "stalled": float(result["train"]["stalled"])})
    run_id = tracking.log_run(
        cfg=cfg, run_id=run_id, history=hist, metrics=flat,
        # with the export's summary.json, the run is one `latentlab predict --run <run id>` applies
        artifacts=[*figures, metrics_out, model, history, *([exported] if exported else []),
                   *([export_summary] if export_summary else []),
                   *([(classifier, "finetune")] if classifier else []),
                   *([(dec_model, "dec")] if dec_model and cfg["dec"]["enabled"] else [])], model=net,
        example=originals.numpy()[:2],
        tags={"dataset": cfg["data"]["name"], "dataset_sha256": ds.meta.get("sha256", "unknown"),
              "protocol": protocol, "training.stalled": str(result["train"]["stalled"]).lower()})
    summary += f" | MLflow run {run_id} at {tracking.tracking_uri()}"
    return f"wrote {metrics_out} and {len(figures)} figures in {plots_dir}: {summary}"


SCORE_KEYS = ("acc", "nmi", "ari", "purity", "silhouette", "davies_bouldin", "gain_acc", "over_raw_acc")


def headline(result: Mapping[str, Any], m: str) -> dict[str, Any]:
    """What `dvc metrics show` gives for method m: ACC and NMI (without labels the label-free
    scores) and an autoencoder method's gain over its raw twin."""
    keys = ("acc", "nmi") if result["labelled"] else ("silhouette", "davies_bouldin")
    out: dict[str, Any] = {k: round(result[m][k], 4) for k in keys}
    if m in result.get("gain", {}):
        g = result["gain"][m]
        out.update(gain_acc=round(g["acc"], 4), gain_nmi=round(g["nmi"], 4), twin=g["twin"])
        if result["train"]["stalled"]:  # beside the scores it puts in doubt
            out["stalled"] = 1
    return out


def _line(result: Mapping[str, Any], m: str, labelled: bool) -> str:
    """One method's scores for the summary line; an autoencoder method's with its gain over its raw twin."""
    if not labelled:
        return f"{m} silhouette {result[m]['silhouette']:.3f} DB {result[m]['davies_bouldin']:.3f}"
    line = f"{m} ACC {result[m]['acc']:.3f} NMI {result[m]['nmi']:.3f}"
    if m in result.get("gain", {}):
        g = result["gain"][m]
        line += f" ({g['acc']:+.3f} / {g['nmi']:+.3f} over {g['twin']})"
    return line


def _lead(result: Mapping[str, Any]) -> list[str]:
    """The summary line's last part: the best autoencoder method (by ACC) against the best
    method that uses no autoencoder, in ACC and in NMI; nothing without labels."""
    if "over_raw" not in result:
        return []
    m = max(result["over_raw"], key=lambda a: result[a]["acc"])
    g = result["over_raw"][m]
    verdict = "ahead of every raw method" if g["acc"] > 0 and g["nmi"] > 0 else "NOT ahead of every raw method"
    return [f"best autoencoder method {m}: {verdict} ({g['acc']:+.3f} ACC over {g['best_raw_acc']}, "
            f"{g['nmi']:+.3f} NMI over {g['best_raw_nmi']})"]


if __name__ == "__main__":  # DVC: python -m latentlab.stages.evaluate --help
    main(evaluate)
