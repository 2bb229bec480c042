"""Benchmark: one-class anomaly detection on MNIST, beside the published results.

The standard protocol: each digit in turn is normal, the autoencoder trains on that
digit's training images only, and all 10,000 test images are scored (AUROC, AUPRC).
Also the harder case of several normal digits (0-6 by default), where plain
reconstruction error is known to be weak. One trained autoencoder per normal set and
seed; every score (each reconstruction error, each latent score, their combinations)
is computed from it, beside a raw-pixel baseline (LOF on a 50-component PCA, the
reference's strong case). Writes bench/results/anomaly-<tag>.json and a Markdown table.

    uv run --frozen python bench/anomaly.py                      # default config
    uv run --frozen python bench/anomaly.py --tag conv model=conv model.latent_dim=16
    uv run --frozen python bench/anomaly.py --sets 0-6 --seeds 0 1 2
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

    a = cfg["anomaly"]
    split = anomaly.make_split(ds.x_train, ds.y_train, ds.x_test, ds.y_test, protocol="one_class",
                               classes=normal, anomaly_fraction=None, val_fraction=a["val_fraction"], seed=seed)
    t = cfg["train"]
    t0 = time.perf_counter()
    fit = training.fit(split.x_fit, model=cfg["model"], optimizer=cfg["optimizer"], trainer=cfg["trainer"],
                       batch_size=t["batch_size"], max_epochs=t["max_epochs"], val_fraction=t["val_fraction"],
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


def table(rows: list[dict], show: list[str]) -> str:
    """Markdown: one line per normal set (mean over seeds), AUROC of each shown score."""
    sets: dict[str, list[dict]] = {}
    for r in rows:
        sets.setdefault("-".join(map(str, r["normal"])) if len(r["normal"]) < 3 else
                        f"{r['normal'][0]}-{r['normal'][-1]}", []).append(r)
    head = ["normal", "seeds", *[f"{s} AUROC" for s in show], f"{show[0]} AUPRC", "Deep SVDD"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means: dict[str, list[float]] = {s: [] for s in show}
    singles = []
    for name, rs in sets.items():
        cells = [name, str(len(rs))]
        for s in show:
            v = [r["scores"][s]["auroc"] for r in rs]
            cells.append(f"{np.mean(v):.3f}" + (f" [{min(v):.3f}, {max(v):.3f}]" if len(v) > 1 else ""))
            if len(rs[0]["normal"]) == 1:
                means[s].append(float(np.mean(v)))
        cells.append(f"{np.mean([r['scores'][show[0]]['auprc'] for r in rs]):.3f}")
        single = len(rs[0]["normal"]) == 1
        cells.append(f"{DEEP_SVDD[rs[0]['normal'][0]]:.3f}" if single else "")
        singles.append(single)
        lines.append("| " + " | ".join(cells) + " |")
    if sum(singles) == 10:
        lines.append("| **mean of 10 digits** | | " + " | ".join(f"**{np.mean(means[s]):.3f}**" for s in show)
                     + " | | 0.948 |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/ (e.g. model=conv)")
    p.add_argument("--sets", nargs="+", default=[str(d) for d in range(10)] + ["0-6"],
                   help="normal sets: a digit, a range 0-6, or a list 1,7 (default: each digit, then 0-6)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--tag", default="default", help="names the results file")
    p.add_argument("--resume", action="store_true",
                   help="keep the (set, seed) rows already in the results file, if its overrides match")
    a = p.parse_args()

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
    singles = [r for r in rows if len(r["normal"]) == 1]
    names = list(rows[0]["scores"])
    mean = {k: float(np.mean([r["scores"][k]["auroc"] for r in singles])) for k in names} if singles else {}
    if mean:
        print("\nmean one-class AUROC per score: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                             sorted(mean.items(), key=lambda kv: -kv[1])))
    best_combined = max((k for k in names if "+" in k), key=lambda k: mean.get(k, 0.0))
    print(f"\n{table(rows, ['mse', best_combined, 'pixels_pca_lof'])}\n\nwrote {out} "
          f"({time.perf_counter() - t0:.0f}s); published mean AUROC: {PUBLISHED_MEAN}")


if __name__ == "__main__":
    main()
