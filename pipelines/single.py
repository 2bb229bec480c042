"""One ``latentlab`` run (the Hydra entry point, the whole clustering branch in one process)
with the given overrides, in a copy of the workspace: the run stage of the studies that are
sweeps of ``latentlab`` (demo, latent). The record: every method's scores, the exported
method, the training summary, the overrides and the wall time.

    python pipelines/single.py --record pipelines/demo/records/seed0.json data=digits model=mlp seed=0
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import study

SCORES = ("acc", "nmi", "ari", "purity")


def run_one(overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="study-single-") as tmp:
        repo = study.copy_workspace(Path(tmp))
        seconds = study.run(["latentlab", *overrides, "hydra.run.dir=outputs/run"], repo)
        m = json.loads((repo / "outputs/run/evaluate/metrics.json").read_text())
    methods = {k: {s: v[s] for s in SCORES if s in v} for k, v in m.items()
               if isinstance(v, dict) and ("acc" in v or "silhouette" in v)}
    return {**study.provenance(), "overrides": overrides, "seconds": round(seconds, 1), "metrics": methods,
            "exported": m["exported"]["method"], "train": m.get("train", {})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--record", required=True)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    record = run_one(a.overrides)
    study.write_record(a.record, record)
    print(json.dumps({k: record[k] for k in ("overrides", "seconds", "exported")}))


if __name__ == "__main__":
    main()
