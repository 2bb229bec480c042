"""Write BENCHMARKS.md from bench/results/*.json, each target checked against its figure.

    uv run --frozen python bench/report.py        # after the benchmarks (make benchmarks runs both)
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    mem = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0.0) if Path("/proc/meminfo").exists() else 0.0
    import torch

    return (f"{cpu}, {__import__('os').cpu_count()} cores, {mem:.0f} GiB RAM, no GPU; Python "
            f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def main() -> None:
    tp, st, fm, sc, fx = (load(n) for n in ("throughput", "startup", "full_mnist-default", "scaling", "fixes"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    out = ["# Benchmarks", "",
           f"Machine: {machine()}. Written by `bench/report.py` at commit {commit} from `bench/results/*.json`;",
           "`make benchmarks` re-runs every benchmark below (about 75 minutes) and rewrites this file.",
           "Each section names the command that regenerates its figures alone. Medians of repeated",
           "measurements; ratios come from runs made side by side in one process or one invocation.", ""]
    targets: list[tuple[str, str, str]] = []

    if tp:
        mlp = next((r for r in tp["rows"] if r["model"] == "mlp"), None)
        for r in tp["rows"]:
            targets.append((f"Lightning throughput >= 0.9x the bare loop ({r['model']})",
                            f"{r['ratio']:.2f}x", verdict(r["ratio"] >= 0.9)))
        if mlp:
            f = mlp["lightning"]["fraction_of_matmul"]
            targets.append(("MLP training >= 60% of matmul GFLOP/s", f"{f:.0%} (bare loop "
                            f"{mlp['bare']['fraction_of_matmul']:.0%})", verdict(f >= 0.6)))
    if fm:
        run = fm["runs"][0]
        targets.append(("no-change `dvc repro` < 5 s", f"{run['second_repro_seconds']:.1f} s",
                        verdict(run["second_repro_seconds"] < 5)))
        if "change" in run:
            ran = run["change"]["stages_run"]
            targets.append((f"a clustering-only change ({', '.join(run['change']['overrides'])}) retrains nothing",
                            "re-ran " + ", ".join(ran), verdict("train" not in ran and "anomaly_train" not in ran)))
        peak = max(s["peak_gib"] for s in run["stages"])
        targets.append(("peak memory of any stage on full MNIST < 3 GiB", f"{peak:.2f} GiB", verdict(peak < 3)))
    if sc:
        for r in sc["rows"]:
            if r["n"] == 1_000_000 and r["case"] != "anomaly":
                targets.append((f"cluster step on 1,000,000 10-d latents < 60 s ({r['case']})", f"{r['seconds']} s",
                                verdict(r["seconds"] < 60)))

    out += ["## Targets", "", "| target | measured | |", "| --- | --- | --- |"]
    out += [f"| {t} | {m} | {v} |" for t, m, v in targets]
    out += ["", "Where a target is not met, its section says what the measurements show the cause to be.", ""]

    if tp:
        out += ["## Training throughput: Lightning against a bare PyTorch loop", "",
                "```bash", "uv run --frozen python bench/throughput.py", "```", "",
                f"The same model, batch size, {tp['data']} images ({tp['n']:,}, a tenth held out for validation), "
                f"optimizer, seed and {tp['threads']} threads; {tp['repeats']} runs of each path alternating, "
                f"{tp['epochs']} epochs each, the first a warm-up; an epoch includes its validation pass and the "
                "best-weights save. GFLOP/s counts matrix-multiply and convolution FLOPs "
                "(`torch.utils.flop_counter`), forward and backward. The limit is a float32 2048x2048 "
                f"matrix multiply: **{tp['matmul_gflops']:.1f} GFLOP/s**.", "",
                "| model | batch | Lightning img/s | bare loop img/s | ratio | Lightning GFLOP/s (of matmul) "
                "| bare GFLOP/s (of matmul) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in tp["rows"]:
            L, B = r["lightning"], r["bare"]
            out.append(f"| {r['model']} | {r['batch_size']} | {L['images_per_s']:.0f} | {B['images_per_s']:.0f} | "
                       f"{r['ratio']:.2f} | {L['gflops']:.1f} ({L['fraction_of_matmul']:.0%}) | "
                       f"{B['gflops']:.1f} ({B['fraction_of_matmul']:.0%}) |")
        out.append("")
    if fm:
        run = fm["runs"][0]
        out += ["## Each DVC stage on full MNIST (70,000 images)", "",
                "```bash", "LATENTLAB_DATA_MIRROR=../shared/datasets uv run --frozen python pipelines/full_mnist.py "
                + " ".join(["--seeds", str(run["seed"])] if run["seed"] is not None else [])
                + (" --change " + " --change ".join(run["change"]["overrides"]) if "change" in run else "")
                + " --tag default", "```", "",
                f"A fresh clone of commit {fm['commit']}, the default config, `dvc repro` from nothing: "
                f"{run['dvc_repro_seconds'] / 60:.1f} min in all. Wall time of each stage's work (as the stage "
                "prints it; process start-up is in the next section) and the process's peak resident memory.", "",
                "| stage | wall time (s) | peak memory (GiB) |", "| --- | ---: | ---: |"]
        out += [f"| {s['stage']} | {s['seconds']:.1f} | {s['peak_gib']:.2f} |" for s in run["stages"]]
        out += ["", "Branches: " + ", ".join(f"{b} {sec / 60:.1f} min" for b, sec in run["branch_seconds"].items())
                + ".", "", "## Re-runs", "",
                f"- `dvc repro` again with nothing changed: **{run['second_repro_seconds']:.1f} s** (DVC checks "
                "every dependency's hash against `dvc.lock`; files it has hashed before are looked up by "
                "size and modification time)."]
        if "change" in run:
            c = run["change"]
            out.append(f"- `dvc repro` after changing only {', '.join(c['overrides'])}: {c['seconds']:.0f} s; "
                       f"it re-ran {', '.join(c['stages_run'])}. The autoencoder is not retrained; the "
                       "finetune stage's classifier is, because it learns the new cluster assignments.")
        out.append("")
    if st:
        out += ["## Start-up cost of a stage", "", "```bash", "uv run --frozen python bench/startup.py", "```", "",
                f"Medians of {st['repeats']} fresh processes each.", "", "| step | median (s) |", "| --- | ---: |"]
        out += [f"| {r['what']} | {r['median_s']:.2f} |" for r in st["rows"]]
        out.append("")
    if sc:
        out += ["## Clustering and anomaly scoring against n", "", "```bash",
                "uv run --frozen python bench/scaling.py", "```", "",
                "Synthetic 10-d latents (10 Gaussians) for the cluster step; synthetic images for anomaly "
                "scoring (the default SSIM + latent kNN score, fitted on 10,000); each case in its own process.", "",
                "| case | n | wall time (s) | peak memory (GiB) | ACC (synthetic) |", "| --- | ---: | ---: | ---: | ---: |"]
        order = ["kmeans", "n2d", "n2d-fit30k", "n2d-transform", "anomaly"]
        rows = sorted(sc["rows"], key=lambda r: (order.index(r["case"]) if r["case"] in order else 99, r["n"]))
        out += [f"| {r['case']} | {r['n']:,} | {r['seconds']} | {r['peak_gib']} | "
                f"{r['acc'] if r['acc'] is not None else '-'} |" for r in rows]
        out.append("")
    if fx:
        out += ["## What the profiles showed, and what changed", "", "```bash",
                "uv run --frozen python bench/throughput.py --models mlp --profile   # torch.profiler tables",
                "uv run --frozen python bench/fixes.py                              # before / after", "```", "",
                "| change | before (s) | after (s) | speed-up | |", "| --- | ---: | ---: | ---: | --- |"]
        out += [f"| {r['what']} | {r['before']:.3f} | {r['after']:.3f} | {r['before'] / r['after']:.1f}x | "
                f"{r['note'].replace('|', '')} |" for r in fx["rows"]]
        out.append("")
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():
        out += [notes.read_text().strip(), ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(out))
    print(f"wrote {ROOT / 'BENCHMARKS.md'}: {sum(v == 'met' for *_, v in targets)} of {len(targets)} targets met")


if __name__ == "__main__":
    main()
