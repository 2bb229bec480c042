"""What every study's stages share: a copy of this workspace to run the project in, the
command run there, and the records and pages written from it.

A study runs the project as a user does, in a copy of the workspace's files (tracked and
untracked-but-not-ignored, uncommitted edits included: what DVC hashed as the stage's
deps), committed in a git repository of its own so that `dvc exp run` works there. Its
record says which commit the copy was made from and whether the tree was clean.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


# What the studies write themselves: their records, summaries, locks and pages are not edits of the code
OWN_OUTPUTS = [":(exclude,glob)pipelines/*/records/**", ":(exclude,glob)pipelines/*/summary*",
               ":(exclude,glob)pipelines/*/summary/**", ":(exclude,glob)pipelines/*/dvc.lock", ":(exclude)docs",
               ":(exclude)README.md"]


def provenance() -> dict:
    """The commit the copy is made from, whether the tree differs from it (the studies' own
    outputs aside), and the machine."""
    edits = git("status", "--porcelain", "--untracked-files=all", "--", ".", *OWN_OUTPUTS).strip()
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(edits),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"}


def copy_workspace(dst: Path) -> Path:
    """dst/repo: this workspace's files (not outputs, caches or ignored files), one commit."""
    repo = dst / "repo"
    files = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():  # a file deleted but not yet committed is not copied
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=study", "-c", "user.email=study@localhost", "commit", "-qm", "study copy"]):
        git(*args, cwd=repo)
    return repo


def run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> float:
    """Run cmd in cwd with this environment's executables first on PATH and the copy's own
    src/ importable; returns its wall time. A failure stops the study with the command's
    output tail."""
    full = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd / "src"),
            **({"LATENTLAB_DATA_MIRROR": mirror()} if mirror() else {}), **(env or {})}
    full.pop("MLFLOW_TRACKING_URI", None)  # the copy's own store, never the user's
    for key in [k for k in full if k.startswith("DVC_")]:  # a study stage's DVC_ROOT would send the copy's
        del full[key]                                      # data paths and store back to the project
    t = time.perf_counter()
    r = subprocess.run(list(cmd), cwd=cwd, env=full, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} exited {r.returncode} in {cwd}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return seconds


def mirror() -> str:
    """Where the copy reads MNIST from: LATENTLAB_DATA_MIRROR when set, else the project's
    ../shared/datasets when it exists (this machine's offline mirror), else the internet."""
    if os.environ.get("LATENTLAB_DATA_MIRROR"):
        return os.environ["LATENTLAB_DATA_MIRROR"]
    local = ROOT.parent / "shared" / "datasets"
    return str(local) if local.is_dir() else ""


def write_record(path: str | Path, record: Mapping) -> None:
    """A record is a DVC metric kept in git (cache: false): written whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def read_records(folder: str | Path) -> list[dict]:
    """Every record in a study's records folder, in name order."""
    paths = sorted(Path(folder).glob("*.json"))
    if not paths:
        sys.exit(f"no records in {folder}: run the study's run stages first")
    return [json.loads(p.read_text()) for p in paths]


def spread(values: Sequence[float], fmt: str = ".3f") -> str:
    """mean [min, max], the form every page uses."""
    return f"{np.mean(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def write_page(path: str | Path, lines: Sequence[str]) -> None:
    Path(path).write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {path}")


def write_summaries(records: str | Path, rows: Sequence[dict], key: str, values) -> None:
    """One summary per group of records (``key``: the field naming the group, e.g. the table),
    ``<study>/summary/<group>.json``, with ``values(group's records) -> {metric: value}``."""
    for name in sorted({r[key] for r in rows}):
        write_summary(Path(records).parent / "summary" / f"{name}.json", **values([r for r in rows if r[key] == name]))


def write_summary(path: str | Path, **values: float) -> None:
    """A study's headline as a DVC metric (in git): a few keys named as the main job's score rows
    name theirs (acc, nmi, gain_acc, auroc, ...), so `dvc metrics show` stays one narrow table
    and `dvc metrics diff` compares the studies' figures across commits."""
    write_record(path, {k: round(float(v), 4) for k, v in values.items()})
