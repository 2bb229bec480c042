"""``latentlab exps``: DVC experiments on one screen, the params that differ and the headline scores.

`dvc exp show` prints every param, every metric file's every key and every dependency's md5:
after a two-experiment queue, ~190 columns. This reads the same data (`dvc exp show --json`)
and prints one row per experiment (and its baseline): what was changed, each autoencoder
method's ACC with its gain over its raw twin, and the anomaly branch's AUROC.

    latentlab exps                # in the project, after `dvc exp run` / `dvc queue start`
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from latentlab import metric_names as M
from latentlab.tracking import flatten

SCORES = "outputs/evaluate/scores/{}.json"
ANOMALY = "outputs/anomaly/evaluate/scores/test.json"
IGNORED = ("data.mirror", "data.cache")  # where data comes from, not what is computed


def rows_of(shown: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per baseline (workspace, commits) and experiment of `dvc exp show --json`:
    {"name", "params" (flat), "metrics" {file: data}}."""
    rows = []

    def add(name: str, data: Mapping[str, Any] | None) -> None:
        if not data:
            return
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        metrics = {f: (v or {}).get("data", {}) for f, v in (data.get("metrics") or {}).items()}
        rows.append({"name": name, "params": flatten(params), "metrics": metrics})

    for top in shown:
        add(top.get("name") or (top["rev"] if top["rev"] == "workspace" else top["rev"][:7]), top.get("data"))
        for exp in top.get("experiments") or []:
            for rev in exp.get("revs") or []:
                add(rev.get("name") or rev["rev"][:7], rev.get("data"))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows with results as an aligned text table: the params that differ between them, then
    the scores. Rows without results (a baseline commit never reproduced here) are left out."""
    shown = [r for r in rows if any(r["metrics"].get(SCORES.format(m)) for m in M.METHODS)
             or r["metrics"].get(ANOMALY)]
    skipped = len(rows) - len(shown)
    rows = shown
    keys = sorted({k for r in rows for k in r["params"]} - set(IGNORED))
    changed = [k for k in keys if len({r["params"].get(k) for r in rows}) > 1]
    # an optional method (autoencoder_dec) only when some experiment ran it
    methods = [m for m in M.AUTOENCODER_METHODS
               if m not in M.OPTIONAL or any("acc" in r["metrics"].get(SCORES.format(m), {}) for r in rows)]
    head = ["experiment", *changed, *methods, "anomaly AUROC"]
    body = []
    for r in rows:
        cells = [r["name"], *(r["params"].get(k, "-") for k in changed)]
        for m in methods:
            s = r["metrics"].get(SCORES.format(m), {})
            cells.append(f"{s['acc']:.4f} ({s.get('gain_acc', float('nan')):+.4f})" if "acc" in s else "-")
        auroc = r["metrics"].get(ANOMALY, {}).get("auroc")
        cells.append(f"{auroc:.4f}" if auroc is not None else "-")
        body.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    twins = ", ".join(f"{m} - {t}" for m, t in M.TWINS.items() if m in methods)
    note = f"; {skipped} without results left out" if skipped else ""
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body), "",
                      f"params: only those that differ{note}", f"ACC (gain over the raw twin: {twins})"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="latentlab exps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-A", "--all-commits", action="store_true", help="every commit's experiments, not HEAD's")
    a = p.parse_args(argv)
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["-A"] if a.all_commits else [])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        print(f"error: `dvc exp show --json` failed: {r.stderr.strip() or r.stdout.strip()}", file=sys.stderr)
        return 2
    rows = rows_of(json.loads(r.stdout))
    if not any(r["metrics"] for r in rows):
        print("error: no DVC experiments or results here; run `dvc repro` or `dvc exp run` first", file=sys.stderr)
        return 2
    print(table(rows))
    return 0
