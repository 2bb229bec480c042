"""One-class anomaly detection on MNIST, beside the published results: the anomaly study.

The standard protocol: each digit in turn is normal, the autoencoder trains on that
digit's training images only, and all 10,000 test images are scored (AUROC, AUPRC).
Also the harder case of several normal digits (0-6 by default), where plain
reconstruction error is known to be weak. One trained autoencoder per normal set and
seed; every score (each reconstruction error, each latent score, their combinations)
is computed from it, beside a raw-pixel baseline (LOF on a 50-component PCA, the
reference's strong case). Writes bench/results/anomaly-<tag>.json and a Markdown table.

    dvc repro pipelines/anomaly/dvc.yaml                       # the study: every set, seeds 0-2, its page
    python pipelines/anomaly.py --sets 3 --seeds 0 --record pipelines/anomaly/records/3-seed0.json
    python pipelines/anomaly.py --page docs/results-anomaly.md --records pipelines/anomaly/records
    python pipelines/anomaly.py --tag conv model@anomaly.model=conv anomaly.latent_dim=16   # a look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

import study  # noqa: E402  (pipelines/study.py, beside this script)

ROOT = Path(__file__).resolve().parents[1]
# Published one-class MNIST AUROC (Ruff et al. 2018, Deep SVDD, per digit) and means.
DEEP_SVDD = [0.980, 0.997, 0.917, 0.919, 0.949, 0.885, 0.983, 0.946, 0.939, 0.965]
PUBLISHED_MEAN = {"Deep SVDD": 0.948, "OCGAN": 0.975, "GEOM": 0.980}


def parse_set(s: str) -> list[int]:
    """"3" -> [3]; "0-6" -> [0..6]; "1,7" -> [1, 7]."""
    if "-" in s:
        a, b = s.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(c) for c in s.split(",")]


def pixel_baseline(split, n_components: int = 50, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.neighbors import LocalOutlierFactor

    flat = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255.0  # noqa: E731
    pca = PCA(n_components=n_components, random_state=seed).fit(flat(split.x_fit))
    lof = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(pca.transform(flat(split.x_fit)))
    return -lof.score_samples(pca.transform(flat(split.x_test)))


def run_one(cfg: dict, normal: list[int], seed: int, ds) -> dict:
    from latentlab import anomaly, training
    from latentlab.config import task_model

    a = cfg["anomaly"]
    split = anomaly.make_split(ds.x_train, ds.y_train, ds.x_test, ds.y_test, protocol="one_class",
                               classes=normal, anomaly_fraction=None, val_fraction=a["val_fraction"], seed=seed)
    t = cfg["train"]
    t0 = time.perf_counter()
    fit = training.fit(split.x_fit, model=task_model(cfg, "anomaly"), optimizer=cfg["optimizer"], trainer=cfg["trainer"],
                       batch_size=t["batch_size"], max_epochs=a["max_epochs"], val_fraction=t["val_fraction"],
                       patience=t["patience"], min_delta=t["min_delta"], lr_schedule=t["lr_schedule"], seed=seed)
    train_s = time.perf_counter() - t0
    y = split.is_anomaly
    scores: dict[str, dict] = {}
    for err in anomaly.RECON_ERRORS:
        F = {k: anomaly.features(fit.net, x, err) for k, x in
             (("fit", split.x_fit), ("val", split.x_val), ("test", split.x_test))}
        for s in anomaly.SCORES:
            if not s.startswith("recon") and err != "mse":
                continue  # latent-only scores do not depend on the error
            name = f"{s.replace('recon', err)}" if s.startswith("recon") else s
            scorer = anomaly.AnomalyScorer(score=s, k=a["k"], threshold=a["threshold"],
                                           target_fpr=a["target_fpr"], percentile=a["percentile"])
            sc = scorer.fit(F["fit"], F["val"]).score_samples(F["test"])
            m = anomaly.anomaly_metrics(y, sc, scorer.threshold_, fpr=a["recall_at_fpr"])
            ub = anomaly.unbalanced_metrics(y, sc, scorer.threshold_, fraction=a["anomaly_fraction"],
                                            draws=a["draws"], seed=seed, fpr=a["recall_at_fpr"])
            scores[name] = {"auroc": m.auroc, "auprc": m.auprc, "unbalanced_auprc": ub["auprc"],
                            "unbalanced_f1": ub["f1"]}
    from sklearn.metrics import average_precision_score, roc_auc_score

    px = pixel_baseline(split, seed=seed)
    scores["pixels_pca_lof"] = {"auroc": float(roc_auc_score(y, px)), "auprc": float(average_precision_score(y, px))}
    return {"normal": normal, "seed": seed, "n_fit": len(split.x_fit), "epochs": len(fit.history),
            "train_seconds": round(train_s, 1), "scores": scores}


def table(rows: list[dict], show: list[str], best: str) -> str:
    """Markdown: one line per normal set, the AUROC of each shown score, then the full-test
    AUPRC and the unbalanced (1% anomalies) AUPRC and F1 of ``best``; means over seeds,
    [min, max] when there are several."""
    sets: dict[str, list[dict]] = {}
    for r in rows:
        n = r["normal"]
        sets.setdefault(str(n[0]) if len(n) == 1 else f"{n[0]}-{n[-1]}", []).append(r)

    def cell(rs: list[dict], score: str, key: str) -> str:
        v = [r["scores"][score][key] for r in rs]
        return f"{np.mean(v):.3f}" + (f" [{min(v):.3f}, {max(v):.3f}]" if len(v) > 1 else "")

    extra = [("auprc", "AUPRC"), ("unbalanced_auprc", "AUPRC, 1%"), ("unbalanced_f1", "F1, 1%")]
    head = ["normal", "seeds", *[f"{s} AUROC" for s in show], *[f"{best} {h}" for _, h in extra],
            "Deep SVDD AUROC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rs in sets.items():
        single = len(rs[0]["normal"]) == 1
        lines.append("| " + " | ".join([name, str(len(rs)), *[cell(rs, s, "auroc") for s in show],
                                        *[cell(rs, best, k) for k, _ in extra],
                                        f"{DEEP_SVDD[rs[0]['normal'][0]]:.3f}" if single else ""]) + " |")
    singles = [r for r in rows if len(r["normal"]) == 1]
    if len({r["normal"][0] for r in singles}) == 10:
        mean = lambda s, k: np.mean([r["scores"][s][k] for r in singles])  # noqa: E731
        lines.append("| **mean of 10 digits** | | " + " | ".join(
            [f"**{mean(s, 'auroc'):.3f}**" for s in show] + [f"{mean(best, k):.3f}" for k, _ in extra])
            + " | 0.948 |")
    return "\n".join(lines)


def figure(rows: list[dict], scores: list[str], path: Path) -> Path:
    """Per-digit AUROC (mean over seeds, min..max bars) of the chosen scores beside Deep SVDD."""
    from latentlab.plots import plt, save_figure

    singles = [r for r in rows if len(r["normal"]) == 1]
    digits = sorted({r["normal"][0] for r in singles})
    width = 0.8 / (len(scores) + 1)
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for j, s in enumerate(scores):
        vals = [[r["scores"][s]["auroc"] for r in singles if r["normal"][0] == d] for d in digits]
        mean = np.array([np.mean(v) for v in vals])
        err = [mean - [min(v) for v in vals], [max(v) for v in vals] - mean]
        ax.bar(np.arange(len(digits)) + j * width, mean, width, yerr=err, capsize=2,
               label=f"{s} (mean {mean.mean():.3f})")
    ax.bar(np.arange(len(digits)) + len(scores) * width, [DEEP_SVDD[d] for d in digits], width, color="grey",
           label=f"Deep SVDD, published (mean {np.mean([DEEP_SVDD[d] for d in digits]):.3f})")
    ax.axhline(PUBLISHED_MEAN["GEOM"], color="black", linestyle=":", label="GEOM mean, published (0.980)")
    ax.set_xticks(np.arange(len(digits)) + 0.4 - width / 2, [str(d) for d in digits])
    ax.set_xlabel("normal digit (all 10,000 test images scored)")
    ax.set_ylabel("AUROC")
    ax.set_ylim(0.8, 1.005)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    ax.set_title("one-class MNIST: AUROC per normal digit (bars: min..max over seeds)")
    return save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/ (e.g. model@anomaly.model=conv)")
    p.add_argument("--sets", nargs="+", default=[str(d) for d in range(10)] + ["0-6"],
                   help="normal sets: a digit, a range 0-6, or a list 1,7 (default: each digit, then 0-6)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--tag", default="default", help="names the results file")
    p.add_argument("--figure", type=Path, help="also draw the per-digit AUROC figure here (PNG)")
    p.add_argument("--resume", action="store_true",
                   help="keep the (set, seed) rows already in the results file, if its overrides match")
    p.add_argument("--record", help="one (set, seed) record for the study (pipelines/anomaly/records/..., in git)")
    p.add_argument("--records", type=Path, help="with --page: the study's records folder")
    p.add_argument("--page", type=Path, help="write this page (and --figure) from --records, run nothing")
    a = p.parse_args()
    if a.page:
        if not a.records:
            p.error("--page needs --records FOLDER")
        write_page(a.page, a.figure, study.read_records(a.records), a.records)
        return
    if a.record and (len(a.sets) != 1 or len(a.seeds) != 1):
        p.error(f"--record {a.record} is one run's record: give one --sets and one --seeds")

    from latentlab.config import compose, validate
    from latentlab.data import prepare

    cfg = OmegaConf.to_container(compose(["trainer.enable_progress_bar=false", *a.overrides]), resolve=True)
    validate(cfg)
    d = cfg["data"]
    ds = prepare(d["name"], mirror=d["mirror"], cache=d["cache"], max_train=d["max_train"], max_test=d["max_test"],
                 test_fraction=d["test_fraction"], seed=d["split_seed"])
    out = ROOT / "bench" / "results" / f"anomaly-{a.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, done = [], {}
    if a.resume and out.exists():
        old = json.loads(out.read_text())
        if old["overrides"] == a.overrides:
            done = {(tuple(r["normal"]), r["seed"]): r for r in old["rows"]}
    t0 = time.perf_counter()
    for s in a.sets:
        for seed in a.seeds:
            if (tuple(parse_set(s)), seed) in done:
                rows.append(done[tuple(parse_set(s)), seed])
                continue
            r = run_one(cfg, parse_set(s), seed, ds)
            rows.append(r)
            if a.record:
                study.write_record(a.record, {**study.provenance(), "overrides": a.overrides, **r})
                continue
            best = max(r["scores"], key=lambda k: r["scores"][k]["auroc"])
            print(f"normal {s} seed {seed}: {r['epochs']} epochs in {r['train_seconds']}s; "
                  + ", ".join(f"{k} {v['auroc']:.3f}" for k, v in r["scores"].items()) + f"; best {best}",
                  flush=True)
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                    text=True).stdout.strip()
            result = {"commit": commit, "overrides": a.overrides, "seeds": a.seeds,
                      "machine": f"{os.cpu_count()} cores, {platform.machine()}",
                      "seconds": round(time.perf_counter() - t0), "rows": rows}
            out.write_text(json.dumps(result, indent=1) + "\n")  # after every set: partial results survive
    if a.record:
        return
    singles = [r for r in rows if len(r["normal"]) == 1]
    names = list(rows[0]["scores"])
    mean = {k: float(np.mean([r["scores"][k]["auroc"] for r in singles])) for k in names} if singles else {}
    if mean:
        print("\nmean one-class AUROC per score: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                             sorted(mean.items(), key=lambda kv: -kv[1])))
    best_combined = max((k for k in names if "+" in k), key=lambda k: mean.get(k, 0.0))
    if a.figure and singles:
        print(f"drew {figure(rows, ['mse', best_combined, 'pixels_pca_lof'], a.figure)}")
    print(f"\n{table(rows, ['mse', 'ssim', best_combined, 'pixels_pca_lof'], best_combined)}\n\nwrote {out} "
          f"({time.perf_counter() - t0:.0f}s); published mean AUROC: {PUBLISHED_MEAN}")


def write_page(page: Path, fig: Path | None, rows: list[dict], records_folder: Path) -> None:
    """The study's page: every normal set's AUROC per score over the records' seeds, and the figure."""
    overrides = {tuple(r["overrides"]) for r in rows}
    if len(overrides) > 1:
        raise SystemExit(f"the records differ in config: {sorted(overrides)}")
    singles = [r for r in rows if len(r["normal"]) == 1]
    names = list(rows[0]["scores"])
    mean = {k: float(np.mean([r["scores"][k]["auroc"] for r in singles])) for k in names} if singles else {}
    best = max((k for k in names if "+" in k), key=lambda k: mean.get(k, 0.0))
    commits = sorted({r["commit"][:10] + (" + edits" if r.get("dirty") else "") for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# One-class anomaly detection on MNIST", "",
             f"Written by `dvc repro pipelines/anomaly/dvc.yaml` from its records (`pipelines/anomaly/records/`, "
             f"kept in git; commit {', '.join(commits)}, {rows[0]['machine']}), seeds {seeds}; config "
             f"{', '.join(rows[0]['overrides']) or 'the default'}. Each normal set trains one anomaly "
             "autoencoder on that set's training images; all 10,000 test images are scored. "
             "`pixels_pca_lof` is the raw twin: LOF on a 50-component PCA of the pixels.", ""]
    if fig and singles:
        figure(rows, ["mse", best, "pixels_pca_lof"], fig)
        lines += [f"![per-digit AUROC]({fig.name})", ""]
    lines += [table(rows, ["mse", "ssim", best, "pixels_pca_lof"], best), "",
              f"Published mean AUROC: {', '.join(f'{k} {v:.3f}' for k, v in PUBLISHED_MEAN.items())}."]
    study.write_page(page, lines)
    if singles:  # the study's headline as a DVC metric: the best combined score's mean over digits and seeds
        study.write_summary(Path(records_folder) / ".." / "summary.json", auroc=mean[best],
                            auprc=np.mean([r["scores"][best]["auprc"] for r in singles]))


if __name__ == "__main__":
    main()
