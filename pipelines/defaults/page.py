"""docs/defaults.md from pipelines/defaults/evidence.yaml: each measured default, its value, the
alternatives measured, on what, and the command that measures them again.

    python pipelines/defaults/page.py pipelines/defaults/evidence.yaml --out docs/defaults.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def page(entries: list[dict]) -> list[str]:
    out = ["# Why the defaults are what they are", "",
           "Written by `dvc repro pipelines/defaults/dvc.yaml` from `pipelines/defaults/evidence.yaml` (in git; a "
           "test checks that every value below is conf/'s value today). Each default was chosen on development "
           "seeds (100-102) and development data, then reported once on seeds 0-2 in the results pages. Scores are "
           "`autoencoder_selflabel` ACC / NMI unless the row names another method.", "",
           "| key | default | measured | on what | why | measure again |", "| --- | --- | --- | --- | --- | --- |"]
    for e in entries:
        measured = "<br>".join(f"`{v}`: {r}" for v, r in e["measured"].items())
        commit = f" (at {e['commit']})" if "commit" in e else ""
        out.append(f"| `{e['key']}` | `{e['value']}` | {measured} | {e['data']}{commit} | {'; '.join(x for x in (e.get('chosen'), e.get('why')) if x)} | "
                   f"`{e['rerun']}` |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("evidence", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.write_text("\n".join(page(yaml.safe_load(a.evidence.read_text()))) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
