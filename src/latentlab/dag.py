"""The pipeline's graph, read from ``dvc.yaml`` (its one written form), and the project
code each stage runs.

``dvc.yaml`` says which stages exist, what each reads, writes and which params it
depends on; the in-process sweep runner (``latentlab.sweep``) takes its stage order,
inputs and params from here rather than keeping a copy. ``code_closure`` computes,
from the source, every module of the package a stage's command imports (at any depth,
function-level imports included): ``dvc.yaml`` must list exactly those as the stage's
code deps, which a test checks, and the sweep cache keys hash them.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "latentlab"
SRC = Path(__file__).resolve().parent  # src/latentlab
ROOT = SRC.parents[1]  # the repository this code and its dvc.yaml belong to
_VAR = re.compile(r"\$\{([^}]+)\}")


@dataclass
class Stage:
    """One stage of ``dvc.yaml`` with its ``${...}`` values filled in."""

    name: str
    module: str                     # the stage's module, run as `python -m <module>`
    args: dict[str, list[str]]      # the command's flags (dashes as underscores) -> values
    deps: list[str]
    outs: list[str]                 # outs, metrics and plots: everything the stage writes
    params: list[str]               # dotted keys, or whole sections
    code: list[str] = field(default_factory=list)   # the deps that are project code (.py)


def _lookup(params: Mapping[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        node = node[part]
    return node


def _fill(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: str(_lookup(params, m.group(1).strip())), value)
    return value


def _paths(items: list[Any]) -> list[str]:
    # DVC lists an out either as a path or as {path: {options}}.
    return [next(iter(i)) if isinstance(i, Mapping) else i for i in items or []]


def _parse_cmd(cmd: str) -> tuple[str, dict[str, list[str]]]:
    words = shlex.split(cmd)
    if words[:2] != ["python", "-m"] or len(words) < 3:
        raise ValueError(f"stage command {cmd!r} is not `python -m <module> --flag value ...`")
    args: dict[str, list[str]] = {}
    flag = None
    for w in words[3:]:
        if w.startswith("--"):
            flag = w[2:].replace("-", "_")
            args[flag] = []
        elif flag is None:
            raise ValueError(f"stage command {cmd!r}: {w!r} follows no --flag")
        else:
            args[flag].append(w)
    return words[2], args


def load(root: str | Path, params: Mapping[str, Any]) -> dict[str, Stage]:
    """The stages of ``<root>/dvc.yaml`` in file order, interpolated with ``params``."""
    raw = yaml.safe_load((Path(root) / "dvc.yaml").read_text())["stages"]
    stages = {}
    for name, s in raw.items():
        module, args = _parse_cmd(" ".join(_fill(s["cmd"], params).split()))
        deps = [_fill(d, params) for d in s.get("deps", [])]
        outs = [_fill(o, params) for key in ("outs", "metrics", "plots") for o in _paths(s.get(key))]
        stages[name] = Stage(name, module, args, deps, outs, list(s.get("params", [])),
                             [d for d in deps if d.endswith(".py")])
    return stages


def order(stages: Mapping[str, Stage], target: str) -> list[Stage]:
    """``target`` and every stage it needs, each after the stages whose outputs it reads."""
    producer = {o: s for s in stages.values() for o in s.outs}
    done: list[Stage] = []

    def visit(s: Stage, path: tuple[str, ...]) -> None:
        if s in done:
            return
        if s.name in path:
            raise ValueError(f"dvc.yaml has a cycle through {' -> '.join(path + (s.name,))}")
        for d in s.deps:
            if d in producer:
                visit(producer[d], path + (s.name,))
        done.append(s)

    visit(stages[target], ())
    return done


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = SRC.joinpath(*parts[1:])
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imports(path: Path) -> set[str]:
    """Every ``latentlab`` module ``path`` imports, at any nesting level; ``from latentlab.x
    import y`` counts ``latentlab.x.y`` when y is a module, else ``latentlab.x``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == PACKAGE:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}"))
    return found


@cache
def closure(module: str) -> frozenset[Path]:
    """The source files of ``module`` and of every project module it imports, directly or
    transitively, the packages' ``__init__.py`` included (importing a.b.c runs a and a.b)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        parts = m.split(".")
        for i in range(1, len(parts) + 1):  # the module and its parent packages
            f = _module_file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(_imports(f))
    return frozenset(seen)


def code_closure(module: str) -> list[str]:
    """The project files ``module`` runs, as ``dvc.yaml`` names them (``src/latentlab/...``), sorted."""
    return sorted(f"src/{PACKAGE}/{p.relative_to(SRC).as_posix()}" for p in closure(module))


def fingerprint(module: str) -> str:
    """sha256 over the names and contents of ``module``'s code closure: it changes when
    any code the module runs does."""
    h = hashlib.sha256()
    for p in sorted(closure(module)):
        h.update(p.relative_to(SRC).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]
