"""Benchmark: the default pipeline (clustering and anomaly branches) on full MNIST, from a fresh clone.

Runs `dvc repro` in a clone of HEAD, then a second `dvc repro` (which must do
nothing), and reports each stage's wall time and peak memory and every method's
scores. Writes bench/results/full_mnist.json and prints a Markdown table.

    LATENTLAB_DATA_MIRROR=../shared/datasets make bench      # offline
    make bench                                               # downloads MNIST
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latentlab import metric_names as M

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LINE = re.compile(r"^\[(\w+)\] .*\(([\d.]+)s, peak memory ([\d.]+) GiB\)$", re.M)


def dvc(repo: Path, *args: str) -> tuple[str, float]:
    # The clone's own code, not the editable install of this working tree.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own store
    t = time.perf_counter()
    r = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode:
        sys.exit(f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout, elapsed


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="latentlab-bench-") as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        out, total = dvc(repo, "repro")
        print(out)
        _, again = dvc(repo, "repro")
        metrics = json.loads((repo / "outputs/evaluate/metrics.json").read_text())
        anomaly = json.loads((repo / "outputs/anomaly/evaluate/metrics.json").read_text())
    stages = [{"stage": s, "seconds": float(sec), "peak_gib": float(gib)} for s, sec, gib in LINE.findall(out)]
    result = {"commit": commit, "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
              "dvc_repro_seconds": total, "second_repro_seconds": again, "stages": stages, "metrics": metrics,
              "anomaly_metrics": anomaly}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "full_mnist.json").write_text(json.dumps(result, indent=2))

    print(f"commit {commit}, {result['machine']}: `dvc repro` {total / 60:.1f} min, "
          f"second `dvc repro` {again:.1f} s\n")
    print("| stage | wall time (s) | peak memory (GiB) |\n| --- | ---: | ---: |")
    for s in stages:
        print(f"| {s['stage']} | {s['seconds']:.1f} | {s['peak_gib']:.2f} |")
    branch = {"clustering": ("download", "train", "embed", "cluster", "finetune", "baselines", "evaluate"),
              "anomaly": ("anomaly_train", "anomaly_score", "anomaly_evaluate")}
    for name, members in branch.items():
        sec = sum(s["seconds"] for s in stages if s["stage"] in members)
        print(f"{name} branch stages: {sec:.0f} s ({sec / 60:.1f} min)")
    print("\n| method | ACC | NMI | ARI | purity |\n| --- | ---: | ---: | ---: | ---: |")
    for m in M.METHODS:
        s = metrics[m]
        print(f"| {m} | {s['acc']:.3f} | {s['nmi']:.3f} | {s['ari']:.3f} | {s['purity']:.3f} |")
    t, u = anomaly["test"], anomaly.get("unbalanced")
    print(f"\nanomaly branch ({anomaly['protocol']}, normal {anomaly['normal_classes']}, {anomaly['score']} "
          f"with {anomaly['error']}): full test AUROC {t['auroc']:.3f}, AUPRC {t['auprc']:.3f}")
    if u:
        print(f"{u['anomaly_fraction']:.1%} anomalies ({u['n_anomalies']} per draw, {u['draws']} draws): "
              + ", ".join(f"{k} {u[k]:.3f} ± {u[k + '_std']:.3f}" for k in
                          ("auroc", "auprc", "precision", "recall", "f1", "recall_at_fpr")))


if __name__ == "__main__":
    main()
