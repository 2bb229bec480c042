"""The main job (clustering and anomaly branches) on full MNIST, in a fresh copy of the project.

The run stage of the MNIST studies (pipelines/<study>/dvc.yaml: one call per seed, --record
the study's record). Runs `dvc repro` in a copy of the workspace, then a second `dvc repro` (which must do
nothing), and reports each stage's wall time and peak memory and every method's
scores. With ``--seeds`` it repeats the pipeline per seed (params.yaml recomposed with
``seed=N`` and the ``--set`` overrides, as `dvc exp run -S` does) and reports each
method's mean [min, max]. Writes bench/results/full_mnist[-<tag>].json and prints
Markdown tables.

    python pipelines/full_mnist.py --seeds 0 --record pipelines/default/records/seed0.json
    LATENTLAB_DATA_MIRROR=../shared/datasets python pipelines/full_mnist.py --seeds 0 --tag try   # offline
    python pipelines/full_mnist.py --seeds 0 --variant long=finetune.epochs=8 --tag long
"""

from __future__ import annotations

import argparse
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
import study  # noqa: E402  (pipelines/study.py, beside this script)
from results import scored, spread  # noqa: E402  (pipelines/results.py: one summary of runs for both)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LINE = re.compile(r"^\[(\w+)\] .*\(([\d.]+)s, peak memory ([\d.]+) GiB\)$", re.M)


THREADS: dict[str, str] = {}  # --jobs: each side-by-side pipeline's share of the cores


def dvc(repo: Path, *args: str) -> tuple[str, float]:
    # The clone's own code, not the editable install of this working tree.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo / "src"),
           **({"LATENTLAB_DATA_MIRROR": study.mirror()} if study.mirror() else {}), **THREADS}
    env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own store
    t = time.perf_counter()
    r = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode:
        sys.exit(f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout, elapsed


BRANCHES = {"clustering": ("download", "train", "embed", "cluster", "finetune", "dec", "baselines", "raw_selflabel",
                           "raw_dec", "export", "evaluate"),
            "anomaly": ("anomaly_train", "anomaly_score", "anomaly_evaluate")}


def compose_params(repo: Path, overrides: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    subprocess.run([sys.executable, "-c", "import sys; from latentlab.config import write_params; "
                    "write_params('params.yaml', sys.argv[1:])", *overrides], cwd=repo, env=env, check=True)


RAN = re.compile(r"^Running stage '(\w+)'", re.M)


def _stages(out: str) -> list[dict]:
    """Each stage's one-line summary in `dvc repro`'s output -> its wall time and peak memory."""
    return [{"stage": s, "seconds": float(sec), "peak_gib": float(gib)} for s, sec, gib in LINE.findall(out)]


def run_seed(repo: Path, seed: int | None, overrides: list[str], variants: dict[str, list[str]], targets: list[str],
             change: list[str]) -> dict:
    seeded = [*overrides, *([f"seed={seed}"] if seed is not None else [])]
    if seeded:
        compose_params(repo, seeded)
    out, total = dvc(repo, "repro", *targets)
    print(out)
    _, again = dvc(repo, "repro", *targets)
    stages = _stages(out)
    run = {"seed": seed, "dvc_repro_seconds": total, "second_repro_seconds": again, "stages": stages,
           "branch_seconds": {b: sum(s["seconds"] for s in stages if s["stage"] in m) for b, m in BRANCHES.items()},
           "metrics": json.loads((repo / "outputs/evaluate/metrics.json").read_text()),
           "export_method": json.loads((repo / "outputs/export/summary.json").read_text())["method"],
           "anomaly_metrics": None if targets else json.loads((repo / "outputs/anomaly/evaluate/metrics.json").read_text())}
    for name, extra in variants.items():
        # The same trained autoencoder and clusters, other self-labelling settings: DVC re-runs
        # the two self-labellings, export and evaluate only.
        compose_params(repo, [*seeded, *extra])
        out, seconds = dvc(repo, "repro", *targets)
        print(out)
        every = json.loads((repo / "outputs/evaluate/metrics.json").read_text())
        run["metrics"][name] = every[M.FINAL]
        # every method's scores too: the variant re-runs the raw twin's self-labelling with it
        run.setdefault("variants", {})[name] = {"overrides": extra, "seconds": seconds,
                                                "stages": _stages(out), "metrics": every}
    if change:
        # A cheap re-run: only these parameters change; which stages does DVC re-run, how long?
        compose_params(repo, [*seeded, *change])
        out, seconds = dvc(repo, "repro", *targets)
        print(out)
        run["change"] = {"overrides": change, "seconds": seconds, "stages_run": RAN.findall(out)}
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", help="one full pipeline per seed (default: params.yaml's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="OVERRIDE",
                   help="a Hydra override for params.yaml, e.g. +experiment=best (repeatable)")
    p.add_argument("--tag", help="results file bench/results/full_mnist-<tag>.json (git-ignored: a look, not a record)")
    p.add_argument("--record", help="one seed's record for a study (pipelines/<study>/records/...json, kept in git)")
    p.add_argument("--target", dest="targets", action="append", default=[],
                   help="dvc repro only this stage and what it needs, e.g. evaluate (the clustering branch)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE...]",
                   help="per seed, also score `autoencoder_selflabel` with these overrides under NAME (re-runs the "
                   "self-labelling only), e.g. long=finetune.epochs=10 (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="seeds run this many at a time, each in its own clone "
                   "with its share of the cores (scores as one at a time; stage times are then not comparable)")
    p.add_argument("--change", action="append", default=[], metavar="OVERRIDE",
                   help="after the runs, change this parameter (e.g. cluster.standardize=true) and time the "
                   "`dvc repro` that follows, listing the stages it re-ran (repeatable)")
    a = p.parse_args()
    # a data file named relative to the project (a study's own data) is read from there, not the copy
    given = list(a.overrides)
    a.overrides = [f"data.path={ROOT / o.split('=', 1)[1]}" if o.startswith("data.path=")
                   and not Path(o.split("=", 1)[1]).is_absolute() and (ROOT / o.split("=", 1)[1]).exists() else o
                   for o in a.overrides]
    if a.record and (len(a.seeds or []) != 1 or a.jobs > 1):
        p.error(f"--record {a.record} is one seed's record: give exactly one --seeds and no --jobs")
    variants: dict[str, list[str]] = {}
    for v in a.variant:
        name, eq, extra = v.partition("=")
        if not eq or not name.isidentifier() or "=" not in extra:
            p.error(f"--variant must be NAME=OVERRIDE[,OVERRIDE...], e.g. long=finetune.epochs=10; got {v!r}")
        variants[name] = extra.split(",")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    runs: list[dict] = []
    result = {"commit": commit, "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
              "overrides": a.overrides, "targets": a.targets, "variants": variants, "runs": runs}
    # a study's record (--record) is its only output; otherwise a look in bench/results/
    path = (Path(os.devnull) if a.record else
            ROOT / "bench" / "results" / (f"full_mnist-{a.tag}.json" if a.tag else "full_mnist.json"))
    path.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="latentlab-bench-") as tmp:
        repo = Path(tmp) / "repo"
        if a.jobs > 1:
            from concurrent.futures import ThreadPoolExecutor

            share = str(max(1, (os.cpu_count() or 1) // a.jobs))
            THREADS.update(OMP_NUM_THREADS=share, MKL_NUM_THREADS=share)
            result["jobs"] = a.jobs

            def one(seed: int | None) -> dict:
                clone = study.copy_workspace(Path(tmp) / f"seed-{seed}")
                run = run_seed(clone, seed, a.overrides, variants, a.targets, a.change)
                runs.append(run)
                path.write_text(json.dumps(result, indent=2))
                return run

            with ThreadPoolExecutor(a.jobs) as pool:
                list(pool.map(one, a.seeds or [None]))
            runs.sort(key=lambda r: -1 if r["seed"] is None else r["seed"])
        else:
            repo = study.copy_workspace(Path(tmp))
        for seed in (a.seeds or [None]) if a.jobs == 1 else []:
            runs.append(run_seed(repo, seed, a.overrides, variants, a.targets, a.change))
            path.write_text(json.dumps(result, indent=2))  # after every seed: a stopped run keeps what it measured
    if a.record:
        study.write_record(a.record, {**study.provenance(), "overrides": given, "targets": a.targets,
                                      "variants": variants, **runs[0]})
    for run in runs:
        report(commit, result["machine"], a.overrides, run)
    if len(runs) > 1:
        print(f"\n{len(runs)} seeds {[r['seed'] for r in runs]}, overrides {a.overrides or 'none'}: "
              "mean [min, max]\n\n| method | ACC | NMI | ARI |\n| --- | ---: | ---: | ---: |")
        for m in scored(runs, [*M.METHODS, *variants]):
            cells = [spread([r["metrics"][m][k] for r in runs]) for k in ("acc", "nmi", "ari")]
            print(f"| {m} | {' | '.join(cells)} |")
        print("\npaired gain over the raw twin (per-seed differences): mean [min, max]\n\n"
              "| method | twin | ACC gain | NMI gain | ahead on every seed |\n| --- | --- | ---: | ---: | --- |")
        for m, twin in [(m, M.TWINS[m]) for m in scored(runs, M.TWINS)]:
            gains = {k: [r["metrics"][m][k] - r["metrics"][twin][k] for r in runs] for k in ("acc", "nmi")}
            ahead = all(g > 0 for k in gains for g in gains[k])
            print(f"| {m} | {twin} | {spread(gains['acc'], '+.4f')} | {spread(gains['nmi'], '+.4f')} | "
                  f"{'yes' if ahead else 'no'} |")
        for b in BRANCHES:
            print(f"{b} branch: {spread([r['branch_seconds'][b] / 60 for r in runs], '.1f')} min")
        print(f"whole `dvc repro`: {spread([r['dvc_repro_seconds'] / 60 for r in runs], '.1f')} min")


def report(commit: str, machine: str, overrides: list[str], run: dict) -> None:
    total, again, stages, metrics, anomaly = (run[k] for k in ("dvc_repro_seconds", "second_repro_seconds", "stages",
                                                               "metrics", "anomaly_metrics"))
    print(f"\ncommit {commit}, {machine}, seed {run['seed']}, overrides {overrides or 'none'}: "
          f"`dvc repro` {total / 60:.1f} min, second `dvc repro` {again:.1f} s\n")

    print("| stage | wall time (s) | peak memory (GiB) |\n| --- | ---: | ---: |")
    for s in stages:
        print(f"| {s['stage']} | {s['seconds']:.1f} | {s['peak_gib']:.2f} |")
    for name, sec in run["branch_seconds"].items():
        print(f"{name} branch stages: {sec:.0f} s ({sec / 60:.1f} min)")
    if "change" in run:
        c = run["change"]
        print(f"changed {c['overrides']}: `dvc repro` {c['seconds']:.0f} s, re-ran {', '.join(c['stages_run'])}")
    print("\n| method | ACC | NMI | ARI | purity |\n| --- | ---: | ---: | ---: | ---: |")
    for m in scored([run], [*M.METHODS, *run.get("variants", {})]):
        s = metrics[m]
        print(f"| {m} | {s['acc']:.3f} | {s['nmi']:.3f} | {s['ari']:.3f} | {s['purity']:.3f} |")
    if anomaly is None:
        return
    t, u = anomaly["test"], anomaly.get("unbalanced")
    print(f"\nanomaly branch ({anomaly['protocol']}, normal {anomaly['normal_classes']}, {anomaly['score']} "
          f"with {anomaly['recon_measure']}): full test AUROC {t['auroc']:.3f}, AUPRC {t['auprc']:.3f}")
    if u:
        print(f"{u['anomaly_fraction']:.1%} anomalies ({u['n_anomalies']} per draw, {u['draws']} draws): "
              + ", ".join(f"{k} {u[k]:.3f} ± {u[k + '_std']:.3f}" for k in
                          ("auroc", "auprc", "precision", "recall", "f1", "recall_at_fpr")))


if __name__ == "__main__":
    main()
