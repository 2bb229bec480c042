"""The MNIST studies' page stage: docs/results*.md, and the README's results table, from records.

Reads a study's records (pipelines/<study>/records/*.json, one per seed, written by
pipelines/full_mnist.py --record and kept in git), or bench/results/full_mnist-<tag>.json
(a look, --tag), and writes
docs/results.md: per seed and over seeds (mean [min, max]) every method's ACC / NMI,
each autoencoder method's paired gain over its raw twin, the stage times, and the
command and config that produced them. The README's table between its `results` markers
is rewritten from the same file (no commit or date there; docs/results.md has them).

    python pipelines/results.py --records pipelines/default/records          # docs/results.md + README
    python pipelines/results.py --records pipelines/best/records --out docs/results-best.md --no-readme
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from latentlab import metric_names as M

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- results:start (make results writes this table) -->", "<!-- results:end -->"
WHAT = {M.AUTOENCODER_SELFLABEL: "the autoencoder's encoder trained further on its own clusters",
        M.AUTOENCODER_DEC: "the autoencoder's encoder, decoder and cluster centres trained together (DEC)",
        M.AUTOENCODER: "the `cluster` config ({pipeline}) on the autoencoder's latents",
        M.AUTOENCODER_KMEANS: "k-means on the autoencoder's latents",
        M.RAW_SELFLABEL: "a fresh CNN trained the same way on raw_cluster's clusters",
        M.RAW_DEC: "DEC from raw_cluster's clusters, its encoder starting as the pixels' PCA(50)",
        M.RAW_CLUSTER: "the `cluster` config ({pipeline}) on a PCA(50) of the pixels",
        M.RAW_PCA_KMEANS: "k-means on a PCA(50) of the pixels",
        M.RAW_KMEANS: "k-means on the pixels"}


# The twins' names before they followed the cluster config. Under the default's UMAP + GMM the old
# raw_umap is the same procedure as raw_cluster, so files of earlier runs read under today's names.
RENAMED = {"raw_umap": M.RAW_CLUSTER, "raw_umap_selflabel": M.RAW_SELFLABEL}


def renamed(node):
    """A benchmark file's content with the old twin names replaced by today's."""
    if isinstance(node, dict):
        return {RENAMED.get(k, k): renamed(v) for k, v in node.items()}
    if isinstance(node, list):
        return [renamed(v) for v in node]
    return RENAMED.get(node, node) if isinstance(node, str) else node


def load(path: Path) -> dict:
    text = path.read_text()
    fm, old = json.loads(text), '"raw_umap' in text
    if old and any(o.startswith(("cluster", "+cluster")) for o in overrides(fm)):
        raise SystemExit(f"{path} predates raw_cluster, and its raw_umap ran UMAP whatever the cluster config "
                         f"({overrides(fm)}): it is not that config's twin; run it again")
    return renamed(fm) if old else fm


def spread(values: list[float], fmt: str = ".3f") -> str:
    return f"{sum(values) / len(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def overrides(fm: dict) -> list[str]:
    """The runs' config as overrides of today's conf/. "was", added by hand to the JSON of runs
    made before a change of the defaults ({"overrides": [...], "until": commit}), replaces the
    overrides they were run with, so that the page names their config and its command still
    reproduces it."""
    return fm["was"]["overrides"] if "was" in fm else fm.get("overrides", [])


def dataset(fm: dict) -> tuple[str, str, list[str]]:
    """The runs' data: (a sentence for the page, a name for the figure's title, the commands that
    make it). Full MNIST unless ``data`` overrides (already on the page as its config) name other
    data, e.g. bench/mnist16.py's file."""
    data = [o for o in overrides(fm) if o.split("=")[0].split(".")[0] == "data" and not o.startswith("data.max_")]
    if not data or data == ["data=mnist"]:
        return ("Full MNIST (70,000 images,\n`protocol: all`: fitted and scored on every image, labels only to score, "
                "as the published tables).", "full MNIST", [])
    made = [o.split("=", 1)[1] for o in data if o.startswith("data.path=") and "mnist16" in o]
    return (("USPS-shaped MNIST (9,298 images, 16x16), made by the first command below; " if made else "")
            + "every image fitted and\nscored, labels only to score.", "`" + " ".join(data) + "`",
            [f"LATENTLAB_DATA_MIRROR=../shared/datasets uv run --frozen python bench/mnist16.py {m}" for m in made])


def load_records(folder: Path) -> dict:
    """A study's records as one results file: the runs, their commits, their shared config."""
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise SystemExit(f"no records in {folder}: `dvc repro {folder.parent}/dvc.yaml` runs the study first")
    runs = [json.loads(q.read_text()) for q in paths]
    configs = {(tuple(r["overrides"]), tuple(r["targets"])) for r in runs}
    if len(configs) > 1:
        raise SystemExit(f"the records in {folder} differ in config: {sorted(configs)}")
    commits = sorted({r["commit"][:10] + (" + edits" if r.get("dirty") else "") for r in runs})
    return {"study": folder.parent.name, "commit": ", ".join(commits), "machine": runs[0]["machine"],
            "overrides": runs[0]["overrides"], "targets": runs[0]["targets"], "runs": runs}


def command(fm: dict, tag: str) -> str:
    if "study" in fm:
        return f"LATENTLAB_DATA_MIRROR=../shared/datasets uv run --frozen dvc repro pipelines/{fm['study']}/dvc.yaml"
    seeds = " ".join(str(r["seed"]) for r in fm["runs"])
    sets = "".join(f" --set {o}" for o in overrides(fm))
    jobs = f" --jobs {fm['jobs']}" if fm.get("jobs", 1) > 1 else ""
    # files written before "targets" was recorded: a run without anomaly scores stopped at evaluate
    targets = fm.get("targets", ["evaluate"] if not any(r.get("anomaly_metrics") for r in fm["runs"]) else [])
    target = "".join(f" --target {t}" for t in targets)
    return (f"LATENTLAB_DATA_MIRROR=../shared/datasets uv run --frozen python pipelines/full_mnist.py "
            f"--seeds {seeds}{sets}{target}{jobs} --tag {tag}")


def exported(runs: list[dict]) -> str:
    """The method whose clusters the runs exported (export.method; runs recorded before it
    existed exported autoencoder_selflabel)."""
    methods = {r.get("export_method", M.AUTOENCODER_SELFLABEL) for r in runs}
    if len(methods) != 1:
        raise SystemExit(f"the runs exported different methods: {sorted(methods)}")
    return methods.pop()


def scored(runs: list[dict], methods=M.METHODS) -> list[str]:
    """The methods every run scored (the optional ones only when they ran)."""
    return [m for m in methods if all(m in r["metrics"] for r in runs)]


def method_table(runs: list[dict], sets: list[str]) -> list[str]:
    """One row per method: ACC and NMI mean [min, max] over the runs, the gain over the twin.
    ``sets``: the runs' overrides, which may name another cluster pipeline than the default's."""
    # a preset (+experiment=...) may set the cluster group too
    pipeline = "as overridden" if any(o.lstrip("+").startswith(("cluster", "experiment")) for o in sets) \
        else "UMAP + GMM"
    out = ["| method | uses the autoencoder | ACC | NMI | gain over its raw twin (ACC / NMI, per-seed mean [min, max]) |",
           "| --- | --- | --- | --- | --- |"]
    for m in scored(runs):
        acc = spread([r["metrics"][m]["acc"] for r in runs])
        nmi = spread([r["metrics"][m]["nmi"] for r in runs])
        gain = "(baseline)"
        if m in M.TWINS:
            t = M.TWINS[m]
            ga = [r["metrics"][m]["acc"] - r["metrics"][t]["acc"] for r in runs]
            gn = [r["metrics"][m]["nmi"] - r["metrics"][t]["nmi"] for r in runs]
            # four places: a lead of 0.0004 on every seed read "+0.000" at three
            gain = f"vs `{t}`: {spread(ga, '+.4f')} / {spread(gn, '+.4f')}"
        out.append(f"| `{m}`: {WHAT[m].format(pipeline=pipeline)} | {'no' if M.is_raw(m) else '**yes**'} | {acc} | {nmi} | {gain} |")
    return out


def verdicts(runs: list[dict]) -> list[str]:
    best = max(scored(runs, M.AUTOENCODER_METHODS), key=lambda m: sum(r["metrics"][m]["acc"] for r in runs))
    raws = scored(runs, M.RAW_METHODS)
    lines = []
    for r in runs:
        m = r["metrics"]
        raw_best = max(raws, key=lambda x: m[x]["acc"])
        ahead = all(m[best][k] > m[x][k] for x in raws for k in ("acc", "nmi"))
        lines.append(f"- seed {r['seed']}: `{best}` {m[best]['acc']:.4f} / {m[best]['nmi']:.4f}; best raw "
                     f"`{raw_best}` {m[raw_best]['acc']:.4f} / {m[raw_best]['nmi']:.4f}; ahead of every raw "
                     f"method in ACC and NMI: **{'yes' if ahead else 'no'}**")
    return lines


def mistakes_table(runs: list[dict]) -> list[str]:
    """Per seed, the exported method's most frequent mistakes (evaluate's metrics.json, runs
    since it counts them): whether its errors are scattered or one style of a digit taken
    for another, the same on every seed."""
    have = [r for r in runs if r["metrics"].get("exported", {}).get("mistakes")]
    if not have:
        return []
    lines = ["", f"## What the exported method gets wrong (`{exported(have)}`, its four most frequent mistakes)", "",
             "A true class, the class its cluster stands for, and how many images; the figure of them is each run's",
             "`outputs/evaluate/plots/mistakes.png`.", "",
             "| seed | errors | most frequent: true -> taken for (images) | share of the errors |", "| ---: | ---: | --- | ---: |"]
    for r in have:
        e = r["metrics"]["exported"]
        errors = round(r["metrics"]["n_scored"] * (1 - e["acc"]))
        top = e["mistakes"]
        lines.append(f"| {r['seed']} | {errors} | " + ", ".join(f"{m['true']} -> {m['as']} ({m['n']})" for m in top)
                     + f" | {sum(m['n'] for m in top) / max(errors, 1):.0%} |")
    return lines


def twins_figure(runs: list[dict], path: Path, title: str) -> Path:
    """Each autoencoder method beside its raw twin: mean over the seeds, whiskers min..max."""
    from latentlab.plots import twin_bars, twin_rows

    rows = twin_rows([r["metrics"] for r in runs], M.TWINS)
    return twin_bars(rows, path, title=title)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=Path, help="a study's records folder, pipelines/<study>/records")
    p.add_argument("--tag", action="append", help="full_mnist-<tag>.json; repeat to merge several runs' "
                   "seeds into one table (default: default)")
    p.add_argument("--no-readme", action="store_true", help="leave the README's table as it is")
    p.add_argument("--times", metavar="TAG", help="the time table from full_mnist-<TAG>.json instead: a run "
                   "of the same config alone (scores side by side are fine, their stage times are not)")
    p.add_argument("--out", default="docs/results.md", help="the page to write (default: docs/results.md); "
                   "its figure goes beside it")
    a = p.parse_args()
    tags = [] if a.records else a.tag or ["default"]
    files = []
    if a.records:
        files.append((a.records.parent.name, a.records, load_records(ROOT / a.records)))
    for tag in tags:
        path = RESULTS / f"full_mnist-{tag}.json"
        if not path.exists():
            raise SystemExit(f"{path} not found: run `{command({'runs': [{'seed': s} for s in (0, 1, 2)]}, tag)}` first")
        fm = load(path)
        fm["runs"].sort(key=lambda r: r["seed"])  # written in the order the pipelines finished
        files.append((tag, path, fm))
    configs = {tuple(overrides(fm)) for _, _, fm in files}
    if len(configs) > 1:
        raise SystemExit(f"the runs to merge differ in config: {sorted(configs)}")
    runs = sorted((r for _, _, fm in files for r in fm["runs"]), key=lambda r: r["seed"])
    seeds = [r["seed"] for r in runs]
    fm = {**files[0][2], "runs": runs}
    cfg = ", ".join(overrides(fm)) or "the default config (conf/, params.yaml)"
    if "was" in fm:
        cfg += f" (in terms of today's conf/: the runs predate {fm['was']['until']}, which changed the defaults)"
    how = "; ".join(f"seeds {[r['seed'] for r in f['runs']]} at commit {f['commit']}"
                    + (f", {f['jobs']} pipelines side by side (their stage times are not comparable)"
                       if f.get("jobs", 1) > 1 else ", one pipeline at a time") for _, _, f in files)
    title = "# Results" + (f": {', '.join(overrides(fm))}" if overrides(fm) else " of the default")
    about, data_name, make_data = dataset(fm)
    doc = [title, "",
           "Written by pipelines/results.py from "
           + ", ".join(f"`{pth if a.records else pth.relative_to(ROOT)}`" for _, pth, _ in files) + ", which",
           "`pipelines/full_mnist.py` wrote: one `dvc repro` of the whole pipeline per seed in a fresh copy",
           f"({how}), on {fm['machine']}. Config: {cfg}. {about}",
           "", "```bash", *make_data,
           *(command(f, tag) for tag, _, f in files),
           *([] if a.records else
             ["uv run --frozen python pipelines/results.py " + " ".join(f"--tag {t}" for t in tags)
              + (f" --times {a.times}" if a.times else "")
              + ("" if a.out == "docs/results.md" else f" --out {a.out} --no-readme")]), "```", "",
           f"## Every method, seeds {seeds}: mean [min, max]", "", *method_table(runs, overrides(fm)), "",
           "![each autoencoder method beside its raw twin](results_twins.png)", "",
           "Each autoencoder method is scored beside its raw twin, the same procedure on the pixels; the gain",
           "is the per-seed difference (paired). "
           f"In these runs the exported `cluster` column and `latentlab predict` gave `{exported(runs)}` "
           "(`export.method`).", "", "## The bar: the best autoencoder method against every raw method", "",
           *verdicts(runs), "", "## Per seed (ACC / NMI)", "",
           "| seed | " + " | ".join(f"`{m}`" for m in scored(runs)) + " |", "| ---: |" + " --- |" * len(scored(runs))]
    for r in runs:
        doc.append(f"| {r['seed']} | " + " | ".join(f"{r['metrics'][m]['acc']:.4f} / {r['metrics'][m]['nmi']:.4f}"
                                                   for m in scored(runs)) + " |")
    doc += mistakes_table(runs)
    timed, timing = runs, []
    if a.times:  # stage times from a run alone: side-by-side seeds share the cores
        tfm = load(RESULTS / f"full_mnist-{a.times}.json")
        if overrides(tfm) != overrides(fm) or tfm.get("jobs", 1) > 1:
            raise SystemExit(f"--times {a.times}: its config {overrides(tfm)} (jobs {tfm.get('jobs', 1)}) "
                             f"is not {overrides(fm)} run alone")
        timed = tfm["runs"]
        timing = [f"Timed apart from the scores above: one pipeline alone, at commit {tfm['commit']}:", "",
                  "```bash", command(tfm, a.times), "```", ""]
    scope = "both branches" if any(r.get("anomaly_metrics") for r in timed) else "the clustering branch only"
    doc += ["", f"## Time (seconds of each stage; `dvc repro` of {scope})", "", *timing,
            "| seed | " + " | ".join(s["stage"] for s in timed[0]["stages"]) + " | clustering branch | whole `dvc repro` |",
            "| ---: |" + " ---: |" * (len(timed[0]["stages"]) + 2)]
    for r in timed:
        t = {s["stage"]: s["seconds"] for s in r["stages"]}
        doc.append(f"| {r['seed']} | " + " | ".join(f"{t.get(s['stage'], float('nan')):.0f}" for s in timed[0]["stages"])
                   + f" | {r['branch_seconds']['clustering']:.0f} | {r['dvc_repro_seconds']:.0f} |")
    an_runs, whose = [r for r in runs if r.get("anomaly_metrics")], ""
    if not an_runs:  # seeds scored on the clustering branch only: the timed run may have both
        an_runs, whose = [r for r in timed if r.get("anomaly_metrics")], " (the timed run)"
    if an_runs:
        doc += ["", f"Anomaly branch{whose}, digit {an_runs[0]['anomaly_metrics']['normal_classes']} normal, every "
                f"test image scored: AUROC {spread([r['anomaly_metrics']['test']['auroc'] for r in an_runs])} over "
                f"seeds {[r['seed'] for r in an_runs]}."]
    out = ROOT / a.out
    figure = out.with_name(f"{out.stem}_twins.png")
    doc = [line.replace("(results_twins.png)", f"({figure.name})") for line in doc]
    out.parent.mkdir(parents=True, exist_ok=True)
    twins_figure(runs, figure,
                 f"what the latent space bought, {data_name}, seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}: "
                 "each autoencoder method beside its raw twin"
                 + (" (whiskers: min..max over seeds)" if len(seeds) > 1 else ""))
    out.write_text("\n".join(doc) + "\n")
    if a.records:  # the study's headline as a DVC metric: the exported method, its gain over its twin
        import study

        best = exported(runs)
        twin = M.TWINS.get(best)
        mean = lambda f: sum(map(f, runs)) / len(runs)  # noqa: E731
        study.write_summary(ROOT / a.records.parent / "summary.json",
                            acc=mean(lambda r: r["metrics"][best]["acc"]), nmi=mean(lambda r: r["metrics"][best]["nmi"]),
                            **({"gain_acc": mean(lambda r: r["metrics"][best]["acc"] - r["metrics"][twin]["acc"]),
                                "gain_nmi": mean(lambda r: r["metrics"][best]["nmi"] - r["metrics"][twin]["nmi"])}
                               if twin else {}))
    print(f"wrote {a.out} and {figure.name} beside it, from {', '.join(str(pth) for _, pth, _ in files)}")
    if a.no_readme:
        return
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} block to rewrite")
    block = [START, f"Full MNIST, seeds {', '.join(map(str, seeds))}, the default config: mean [min, max] "
             "([every figure, per seed, the commands and the stage times](docs/results.md)). Regenerate:",
             "", "```bash",
             *(["make results    # = dvc repro pipelines/default/dvc.yaml: seeds 0-2, one at a time, then this table"]
               if a.records else [command(f, tag) for tag, _, f in files]),
             *([command(tfm, a.times)] if a.times else []),
             *([] if a.records else ["make results" + (f" RESULTS_TAGS=\"{' '.join(f'--tag {t}' for t in tags)}\""
                                                          if tags != ["default"] else "")]),
             "```", "", *method_table(runs, overrides(fm)), "",
             "![each autoencoder method beside its raw twin, over seeds](docs/results_twins.png)", END]
    readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: "\n".join(block), text, flags=re.S))
    print("rewrote the results table in README.md")


if __name__ == "__main__":
    main()
