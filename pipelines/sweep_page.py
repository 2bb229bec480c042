"""The page of a study made of ``latentlab`` runs (pipelines/single.py records): one row per
setting (the overrides that differ between records, seeds pooled), every method's ACC and
NMI as mean [min, max] over seeds, whether the best autoencoder method is ahead of every raw
one, and a figure of the methods' ACC per setting.

    python pipelines/sweep_page.py pipelines/demo/records --out docs/results-demo.md --title "The demo"
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import study

from latentlab import metric_names as M


def settings(rows: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by the overrides that vary between them, the seed aside."""
    def key(r: dict) -> tuple[str, ...]:
        return tuple(o for o in r["overrides"] if not o.startswith("seed="))
    common = set.intersection(*(set(key(r)) for r in rows))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(" ".join(o for o in key(r) if o not in common) or "(all)", []).append(r)
    return groups


def page(rows: list[dict], title: str, figure: Path, study_dir: str) -> list[str]:
    groups = settings(rows)
    common = sorted(set.intersection(*(set(r["overrides"]) for r in rows)))
    methods = [m for m in M.METHODS if all(m in r["metrics"] and "acc" in r["metrics"][m] for r in rows)]
    commits = sorted({r["commit"][:10] + (" + edits" if r.get("dirty") else "") for r in rows})
    out = [f"# {title}", "",
           f"Written by `dvc repro pipelines/{study_dir}/dvc.yaml` from its records (`pipelines/{study_dir}/records/`, "
           f"kept in git; commit {', '.join(commits)}, {rows[0]['machine']}). Each record is one `latentlab` run in a "
           f"fresh copy of the project; shared overrides: `{' '.join(o for o in common if not o.startswith('seed=')) or 'none'}`. "
           "ACC (NMI below it): mean [min, max] over seeds.", "",
           "| setting | seeds | " + " | ".join(f"`{m}`" for m in methods) + " | best autoencoder method ahead of every raw one |",
           "| --- | --- |" + " --- |" * len(methods) + " --- |"]
    for name, rs in groups.items():
        seeds = sorted(int(o.split("=")[1]) for r in rs for o in r["overrides"] if o.startswith("seed="))
        cells = [f"{study.spread([r['metrics'][m]['acc'] for r in rs])}<br>"
                 f"{study.spread([r['metrics'][m]['nmi'] for r in rs])}" for m in methods]
        ahead = 0
        for r in rs:
            ae = max(r["metrics"][m]["acc"] for m in methods if not m.startswith("raw_"))
            raw = max(r["metrics"][m]["acc"] for m in methods if m.startswith("raw_"))
            ahead += ae > raw
        out.append(f"| `{name}` | {', '.join(map(str, seeds))} | " + " | ".join(cells) + f" | {ahead} of {len(rs)} seeds |")
    out += ["", f"![ACC per method and setting]({figure.name})", "",
            f"Wall time of one run: {study.spread([r['seconds'] for r in rows], '.0f')} s."]
    draw(groups, methods, figure, title)
    return out


def draw(groups: dict[str, list[dict]], methods: list[str], path: Path, title: str) -> None:
    from latentlab.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) * len(methods) / 3), 4.6))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        vals = [[r["metrics"][m]["acc"] for r in rs] for rs in groups.values()]
        mean = np.array([np.mean(v) for v in vals])
        err = [mean - [min(v) for v in vals], [max(v) for v in vals] - mean]
        ax.bar(np.arange(len(groups)) + j * width, mean, width, yerr=err, capsize=2, label=m,
               hatch="//" if m.startswith("raw_") else None)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, list(groups), fontsize=8)
    ax.set_ylabel("ACC (bars: min..max over seeds)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.set_title(title)
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("records", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", required=True)
    a = p.parse_args()
    rows = study.read_records(a.records)
    study.write_page(a.out, page(rows, a.title, a.out.with_suffix(".png"), a.records.parent.name))
    exported = rows[0]["exported"]
    study.write_summary(a.records.parent / "summary.json", acc=np.mean([r["metrics"][exported]["acc"] for r in rows]),
                        nmi=np.mean([r["metrics"][exported]["nmi"] for r in rows]))


if __name__ == "__main__":
    main()
