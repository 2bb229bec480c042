"""pipelines/: every study is a valid DVC pipeline whose stages run real scripts, list exactly
the code those scripts run, keep their records in git beside them, and write their page in docs/."""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from latentlab import dag

PIPELINES = ROOT / "pipelines"
STUDIES = sorted(p.parent.name for p in PIPELINES.glob("*/dvc.yaml"))
DVC = [str(Path(sys.executable).parent / "dvc")]


def _siblings(script: Path) -> set[Path]:
    """The pipelines/*.py modules a study script imports, transitively (they sit on its sys.path)."""
    seen, todo = set(), [script]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            # importable from the script's own folder, or pipelines/ (the scripts put it on sys.path)
            todo += [d / f"{n}.py" for n in names for d in {script.parent, PIPELINES} if (d / f"{n}.py").is_file()]
    return seen


def _stages(study: str) -> dict[str, dict]:
    """dvc.yaml's stages with foreach / matrix expanded to their first item (the command's shape)."""
    doc = yaml.safe_load((PIPELINES / study / "dvc.yaml").read_text())
    out = {}
    for name, st in doc["stages"].items():
        if "foreach" in st:
            item = st["foreach"][0]
            st = yaml.safe_load(yaml.safe_dump(st["do"]).replace("${item}", str(item)))
        elif "matrix" in st:
            text = yaml.safe_dump({k: v for k, v in st.items() if k != "matrix"})
            for key, values in st["matrix"].items():
                text = text.replace("${item.%s}" % key, str(values[0]))
            st = yaml.safe_load(text)
        out[name] = st
    return out


def test_the_top_level_has_the_studies():
    assert {"default", "best", "mnist16", "anomaly", "latent", "tables", "demo", "pyod", "defaults"} <= set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_a_study_is_a_valid_dvc_pipeline(study):
    """`dvc dag` reads it (names resolve, no output claimed twice, no cycle), from the project root."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([*DVC, "dag", "--md", f"pipelines/{study}/dvc.yaml"], cwd=ROOT, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert f"pipelines/{study}/dvc.yaml:page" in r.stdout, "a study ends in its page stage"


@pytest.mark.parametrize("study", STUDIES)
def test_a_study_stage_runs_a_real_script_and_lists_exactly_its_code(study):
    for name, st in _stages(study).items():
        assert st.get("wdir") == "../..", f"{study}:{name} runs from the project root, as a user types it"
        cmd = shlex.split(st["cmd"])
        assert cmd[0] == "python" and cmd[1].startswith("pipelines/"), (study, name, cmd)
        script = ROOT / cmd[1]
        assert script.is_file(), f"{study}:{name}: {cmd[1]} does not exist"
        deps = set(st["deps"])
        code = {d for d in deps if d.endswith(".py") or d in ("src/latentlab", "conf")}
        need = {str(p.relative_to(ROOT)) for p in _siblings(script)}
        if "src/latentlab" in deps:  # it runs the whole project in a copy: all of its code and config
            assert "conf" in deps, (study, name)
            assert code - {"src/latentlab", "conf"} == need, (study, name, sorted(code), sorted(need))
        else:
            for f in list(_siblings(script)):
                for m in dag._imports(f):
                    need.update(dag.code_closure(m))
            assert code == need, (study, name, {"missing": sorted(need - code), "extra": sorted(code - need)})


@pytest.mark.parametrize("study", STUDIES)
def test_records_stay_in_the_study_and_in_git_and_pages_in_docs(study):
    for name, st in _stages(study).items():
        for entry in [*st.get("outs", []), *st.get("metrics", [])]:
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            if "records" in path or path.endswith("summary.json") or "/summary/" in path or path.startswith("docs/"):
                assert opts.get("cache") is False, f"{study}:{name}: {path} must be kept in git (cache: false)"
                assert path.startswith((f"pipelines/{study}/", "docs/", "README.md")), (study, path)
    records = PIPELINES / study / "records"
    if records.is_dir():  # a study that has run: its records are committed, its page exists
        tracked = subprocess.run(["git", "ls-files", str(records)], cwd=ROOT, capture_output=True, text=True).stdout
        assert tracked.strip(), f"{records} is not in git"


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def test_the_defaults_evidence_names_todays_values():
    """docs/defaults.md cannot go stale: every measured key's value is conf/'s value today."""
    from omegaconf import OmegaConf

    from latentlab.config import compose

    cfgs = {None: compose([])}
    groups = {}
    for d in yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["defaults"]:
        if isinstance(d, dict):
            groups.update(d)
    entries = yaml.safe_load((PIPELINES / "defaults" / "evidence.yaml").read_text())
    for e in entries:
        assert {"key", "value", "data", "measured", "rerun"} <= set(e), e
        preset = e.get("preset")  # a key of a +experiment=<preset>, checked in that preset's composition
        if preset not in cfgs:
            cfgs[preset] = compose([f"+experiment={preset}"])
        today = (groups[e["key"]] if e["key"] in groups and not preset else
                 OmegaConf.select(cfgs[preset], e["key"], default="<missing>"))
        assert today == e["value"], f"{e['key']}: conf/ has {today!r}, evidence.yaml measured {e['value']!r}"
        measured = {str(v).split(" ")[0] for v in e["measured"]}
        assert "chosen" in e or str(e["value"]) in measured or any(_same(e["value"], v) for v in measured), \
            f"{e['key']}: the default is not among the values measured, and `chosen` does not say why"
    page = (ROOT / "docs" / "defaults.md").read_text()
    assert all(f"`{e['key']}`" in page for e in entries), "docs/defaults.md is older than evidence.yaml"


def test_config_comments_say_what_a_key_does_in_three_lines_at_most():
    """The lab notes behind a value live in docs/defaults.md, not in conf/."""
    long = []
    for f in sorted((ROOT / "conf").rglob("*.yaml")):
        run, col = 0, None  # lines in the current comment; the column of a value line's trailing comment
        for i, line in enumerate([*f.read_text().splitlines(), ""]):
            stripped = line.strip()
            if stripped.startswith("#"):  # a Hydra directive too: the reader sees one block
                here = line.index("#")
                run = run + 1 if (col is None and run) or here == col else 1
                col = col if here == col else None
            elif "#" in line:
                run, col = 1, line.index("#")
            else:
                run, col = 0, None
            if run > 3:
                long.append(f"{f.relative_to(ROOT)}:{i + 1}")
    assert not long, f"comment blocks longer than 3 lines end at {sorted(set(long))}"
