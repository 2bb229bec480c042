"""Stage `anomaly_evaluate`: metrics on the full test split and on unbalanced draws of it,
figures, ROC / PR curves for DVC, one MLflow run in the anomaly experiment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from latentlab import history as history_file
from latentlab import metric_names as M
from latentlab import models, plots, tracking
from latentlab.anomaly import (UNKNOWN, anomaly_metrics, error_for, fpr_interval, plan_for, skipped_reason,
                              split_for, unbalanced_indices, unbalanced_metrics)
from latentlab.data import Prepared
from latentlab.errors import LatentlabError
from latentlab.files import atomic_dir, write_csv, write_json
from latentlab.models import to_float
from latentlab.stages.common import main


MIN_VAL_NORMALS = 100  # below this, the threshold's false-positive rate is not promised


def ds_noun(ds: Any) -> str:
    from latentlab.config import sample_noun

    return sample_noun(ds.meta.get("dataset", ""), ds.is_images)


def _curve_rows(x: np.ndarray, y: np.ndarray, names: tuple[str, str], n: int = 400) -> list[dict[str, float]]:
    # A DVC plot of 10,000 points says no more than one of 400 and renders slowly.
    keep = np.unique(np.linspace(0, len(x) - 1, min(n, len(x))).round().astype(int))
    return [{names[0]: round(float(x[i]), 6), names[1]: round(float(y[i]), 6)} for i in keep]


def anomaly_evaluate(cfg: Mapping[str, Any], data: Path, model: Path, history: Path, scores: Path,
                     metrics_out: Path, scores_dir: Path, plots_dir: Path, curves_dir: Path,
                     run_id: str | None = None) -> str:
    """Metrics on the full test split and on seeded unbalanced draws of it, figures,
    ROC / PR curves for DVC, and one MLflow run in the anomaly experiment. Without labels
    (protocol unsupervised): how many test samples the threshold flags, the score
    distribution and the most and least anomalous samples; no curves to draw.

    ``metrics_out``: every measurement. ``scores_dir``: DVC's metrics, a small file per test
    set (``test.json``, ``unbalanced.json``) that `dvc metrics show` prints as a row."""
    tracking.check_server()
    a = cfg["anomaly"]
    if (reason := skipped_reason(scores)) is not None:
        return _skipped(reason, metrics_out, scores_dir, plots_dir, curves_dir)
    with np.load(scores) as f:
        s, val_s, is_anom, y = f["scores"], f["val_scores"], f["is_anomaly"], f["y"]
        thr, recon_error = float(f["threshold"]), f["recon_error"]
        raw = {n: f[n] for n in M.RAW_DETECTORS if n in f.files}
        n_val = int(f["n_val"]) if "n_val" in f.files else len(val_s)
    ds = Prepared.load(data)
    split = split_for(a, cfg["seed"], ds)
    plan = plan_for(a, ds)
    if len(split.x_test) != len(s) or not np.array_equal(split.y_test, y):
        raise LatentlabError(f"{scores} does not match the current split ({len(s)} scores, "
                             f"{len(split.x_test)} test samples); re-run `dvc repro`")
    known = bool((is_anom != UNKNOWN).all())  # the unsupervised protocol has no truth to score against
    err = error_for(a["error"], ds.is_images)
    hist = history_file.read(history)
    result: dict[str, Any] = {
        "protocol": plan.protocol, "plan": plan.why, "normal_classes": split.normal_classes, "score": a["score"], "recon_measure": err,
        "threshold": thr, "val_flagged": float((val_s > thr).mean()), "n_fit": int(len(split.x_fit)),
        "n_contaminated": split.n_contaminated, "n_test": int(len(s)), "test_flagged": float((s > thr).mean()),
        "train": {"epochs": len(hist), "best_val_recon_loss": min(r[M.VAL_LOSS] for r in hist)},
    }
    mean_mse = models.mean_sample_mse(split.x_fit, split.x_val)
    result["train"].update(mean_sample_mse=mean_mse, stalled=models.stalled(result["train"]["best_val_recon_loss"],
                                                                             mean_mse))
    draws: list[tuple[np.ndarray, np.ndarray]] = []
    roc_rows: list[dict[str, float]] = []
    pr_rows: list[dict[str, float]] = []
    if known:
        full = anomaly_metrics(is_anom, s, thr, fpr=a["recall_at_fpr"])
        normal = s[is_anom == 0]
        # what the threshold did to the normal test images (false positives), beside what it aimed at
        flagged = int((normal > thr).sum())
        target = a["target_fpr"] if a["threshold"] == "fpr" else 1.0 - a["percentile"] / 100.0
        result["test_false_positives"] = {
            "flagged": flagged, "of": int(len(normal)), "rate": flagged / len(normal),
            "interval95": list(fpr_interval(flagged, len(normal))), "target": target,
            "validation_normals": n_val,
            # a quantile of fewer than 100 validation normals cannot hold a 1% target to 2x
            "promise": (f"within 2x of the target: {flagged / len(normal) <= 2 * target}" if n_val >= MIN_VAL_NORMALS
                        else f"none: the threshold was set on {n_val} validation normals (at least "
                             f"{MIN_VAL_NORMALS} are needed to hold the target)")}
        result.update(test={k: v for k, v in vars(full).items() if k != "fpr"},
                      test_recon_error={"normal": float(recon_error[is_anom == 0].mean()),
                                        "anomaly": float(recon_error[is_anom == 1].mean())})
        pr_on = (is_anom, s)
        if a["anomaly_fraction"] is not None:
            result["unbalanced"] = {k: v for k, v in unbalanced_metrics(
                is_anom, s, thr, fraction=a["anomaly_fraction"], draws=a["draws"], seed=cfg["seed"],
                fpr=a["recall_at_fpr"]).items() if k != "fpr"}  # the setting is a param, not a measurement
            # The draws unbalanced_metrics averaged over, drawn again (same seed) for their curves.
            rng = np.random.default_rng(cfg["seed"])
            for _ in range(a["draws"]):
                i = unbalanced_indices(is_anom, a["anomaly_fraction"], rng)
                draws.append((is_anom[i], s[i]))
            pr_on = draws[0]
        if raw:  # the raw twins, scored on the same test samples and the same draws
            result["raw"] = {}
            if draws:  # the same draws the autoencoder score was measured on (same seed)
                rng = np.random.default_rng(cfg["seed"])
                idx = [unbalanced_indices(is_anom, a["anomaly_fraction"], rng) for _ in range(a["draws"])]
            for n, r in raw.items():
                row = {"auroc": float(roc_auc_score(is_anom, r)), "auprc": float(average_precision_score(is_anom, r))}
                if draws:
                    row["unbalanced_auprc"] = float(np.mean([average_precision_score(is_anom[i], r[i]) for i in idx]))
                result["raw"][n] = row
            result["over_raw"] = {k: {"gain": result["test"][k] - max(v[k] for v in result["raw"].values()),
                                      "best_raw": max(result["raw"], key=lambda n: result["raw"][n][k])}
                                  for k in ("auroc", "auprc")}
        fpr, tpr, _ = roc_curve(is_anom, s)
        roc_rows = _curve_rows(fpr, tpr, ("fpr", "tpr"))
        prec, rec, _ = precision_recall_curve(*pr_on)
        pr_rows = _curve_rows(rec[::-1], prec[::-1], ("recall", "precision"))

    net = models.load(model)
    n = min(a["n_images"], len(s) // 2)
    order = np.argsort(s)
    shown = np.concatenate([order[::-1][:n], order[:n]])
    with torch.inference_mode():
        x = to_float(torch.from_numpy(split.x_test[shown]))
        recons = net(x).numpy()
    label = f"{a['score']} score" + (f" ({err})" if a["score"].startswith("recon") else "")
    marks = is_anom if known else np.full(len(s), UNKNOWN)
    with atomic_dir(plots_dir) as tmp:  # every figure, or none
        drawn = [plots.score_histogram(s, is_anom if known else np.zeros(len(s), dtype=np.int64), thr,
                                       tmp / "score_histogram.png",
                                       title=label if known else f"{label} (no labels: every test sample)"),
                 plots.loss_curve(hist, tmp / "loss_curve.png")]
        if known:
            drawn.append(plots.roc_pr_curves((is_anom, s), draws, tmp / "roc_pr.png", a["anomaly_fraction"]))
        if ds.is_images:
            drawn.append(plots.anomaly_extremes(x.numpy(), recons, s[shown], marks[shown], tmp / "extremes.png", n=n,
                                                classes=y[shown] if ds.labelled else None))
        else:
            drawn.append(plots.vector_extremes(x.numpy(), recons, s[shown], marks[shown], tmp / "extremes.png",
                                               n=min(n, 3)))
    figures = [plots_dir / p.name for p in drawn]
    # No labels, no curve: a header alone, which DVC can still read.
    write_csv(curves_dir / "roc.csv", roc_rows, ("fpr", "tpr"))
    write_csv(curves_dir / "pr.csv", pr_rows, ("recall", "precision"))
    with atomic_dir(scores_dir) as tmp:
        for name, row in headline(result).items():
            write_json(tmp / f"{name}.json", {**row, **({"stalled": 1} if result["train"]["stalled"] else {})})
    write_json(metrics_out, result)
    stall = (f"STALLED: the anomaly autoencoder reconstructs no better than the mean normal sample (val MSE "
             f"{result['train']['best_val_recon_loss']:.4f} vs {mean_mse:.4f}): these scores rest on little but the "
             "scorer's distances | " if result["train"]["stalled"] else "")

    flat = {"threshold": thr, "val_flagged": result["val_flagged"], "test_flagged": result["test_flagged"],
            "best_val_recon_loss": result["train"]["best_val_recon_loss"], "epochs": len(hist),
            "stalled": float(result["train"]["stalled"])}
    if known:
        flat.update({f"test/{k}": v for k, v in result["test"].items()})
        flat.update({f"unbalanced/{k}": v for k, v in result.get("unbalanced", {}).items()})
        fp = result["test_false_positives"]
        flat.update({"test/false_positive_rate": fp["rate"], "test/false_positive_rate_low": fp["interval95"][0],
                     "test/false_positive_rate_high": fp["interval95"][1], "test/fpr_target": fp["target"]})
        for n, row in result.get("raw", {}).items():
            flat.update({f"{n}/{k}": v for k, v in row.items()})
        for k, v in result.get("over_raw", {}).items():
            flat[f"over_raw/{k}"] = v["gain"]
    tags = {"dataset": cfg["data"]["name"], "dataset_sha256": ds.meta.get("sha256", "unknown"),
            "anomaly.protocol": plan.protocol, "training.stalled": str(result["train"]["stalled"]).lower()}
    if known:
        tags["anomaly.normal_classes"] = str(split.normal_classes)
    run_id = tracking.log_run(
        cfg=cfg, task="anomaly", run_id=run_id, history=hist, metrics=flat,
        artifacts=[*figures, metrics_out, *((curves_dir / "roc.csv", curves_dir / "pr.csv") if known else ()),
                   model, history],
        model=net, example=x.numpy()[:2], tags=tags)
    where = f"MLflow run {run_id} at {tracking.tracking_uri()}"
    if not known:
        return (f"wrote {metrics_out} and {len(figures)} figures in {plots_dir}: {stall}no labels; the threshold flags "
                f"{result['test_flagged']:.1%} of {len(s)} test samples | {where}")
    ub = result.get("unbalanced")
    fp = result["test_false_positives"]
    vs = result.get("over_raw")
    summary = (f"test AUROC {full.auroc:.3f} AUPRC {full.auprc:.3f}"
               + (f" ({vs['auroc']['gain']:+.3f} / {vs['auprc']['gain']:+.3f} over the best raw twin, "
                  f"{vs['auroc']['best_raw']} / {vs['auprc']['best_raw']})" if vs else "")
               + f" | false positives {fp['rate']:.1%} [{fp['interval95'][0]:.1%}, {fp['interval95'][1]:.1%}] of "
                 f"normal test {ds_noun(ds)} (target {fp['target']:.1%}; promise: {fp['promise']})"
               + (f" | {a['anomaly_fraction']:.0%} anomalies: AUPRC {ub['auprc']:.3f} ± {ub['auprc_std']:.3f}, "
                  f"F1 {ub['f1']:.3f} ± {ub['f1_std']:.3f} over {ub['draws']} draws" if ub else ""))
    return f"wrote {metrics_out} and {len(figures)} figures in {plots_dir}: {stall}{summary} | {where}"


def _skipped(reason: str, metrics_out: Path, scores_dir: Path, plots_dir: Path, curves_dir: Path) -> str:
    """The branch's outputs when the data cannot support it: the reason where the scores
    would be (metrics.json, `dvc metrics show`), no figures, empty curves; no MLflow run."""
    write_json(metrics_out, {"skipped": reason})
    with atomic_dir(scores_dir) as tmp:
        write_json(tmp / "test.json", {"skipped": 1})
    with atomic_dir(plots_dir):
        pass
    write_csv(curves_dir / "roc.csv", [], ("fpr", "tpr"))
    write_csv(curves_dir / "pr.csv", [], ("recall", "precision"))
    return f"anomaly branch skipped: {reason}"


def headline(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per test set, what `dvc metrics show` prints: AUROC, AUPRC and F1 at the threshold; on the
    full split also the share of normal images the threshold flagged, beside its target."""
    if "test" not in result:  # no labels: what the threshold did is all there is
        return {"test": {"flagged": round(result["test_flagged"], 4)}}
    pick = ("auroc", "auprc", "f1")
    rows = {"test": {k: round(result["test"][k], 4) for k in pick}}
    fp = result["test_false_positives"]
    rows["test"]["fpr"] = round(fp["rate"], 4)  # short: `dvc metrics show` is one table of every row's keys
    rows["test"]["fpr_target"] = round(fp["target"], 4)
    if "over_raw" in result:  # the autoencoder score over the best raw twin, and the twins' own rows
        rows["test"].update({f"gain_{k}": round(v["gain"], 4) for k, v in result["over_raw"].items()})
        rows.update({n: {k: round(v[k], 4) for k in ("auroc", "auprc")} for n, v in result["raw"].items()})
    if "unbalanced" in result:
        rows["unbalanced"] = {k: round(result["unbalanced"][k], 4) for k in pick}
    return rows


if __name__ == "__main__":  # DVC: python -m latentlab.stages.anomaly_evaluate --help
    main(anomaly_evaluate)
