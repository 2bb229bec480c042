"""dvc.yaml is honest: each stage lists exactly the code its command imports, and the
in-process sweep runner follows the same graph."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from latentlab import dag


@pytest.fixture(scope="module")
def stages():
    return dag.load(ROOT, yaml.safe_load((ROOT / "params.yaml").read_text()))


def test_every_stage_lists_exactly_the_code_it_imports(stages):
    wrong = {}
    for s in stages.values():
        need = set(dag.code_closure(s.module))
        listed = {d for d in s.code if d.startswith("src/")}
        if need != listed:
            wrong[s.name] = {"missing": sorted(need - listed), "not imported": sorted(listed - need)}
    assert not wrong, f"dvc.yaml's code deps differ from the stages' import closures: {wrong}"


def test_every_stage_module_exists_and_is_named_after_its_stage(stages):
    for s in stages.values():
        assert s.module == f"latentlab.stages.{s.name}"
        assert (ROOT / "src" / Path(*s.module.split("."))).with_suffix(".py").is_file()


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throw-away ``latentlab`` package of the given files, in place of the real one."""
    def make(files: dict[str, str]) -> Path:
        pkg = tmp_path / "latentlab"
        for name, text in files.items():
            (pkg / name).parent.mkdir(parents=True, exist_ok=True)
            (pkg / name).write_text(text)
        monkeypatch.setattr(dag, "SRC", pkg)
        dag.closure.cache_clear()
        return pkg

    yield make
    dag.closure.cache_clear()


def test_the_closure_follows_function_level_imports(package):
    """A module imported inside a function counts, and so do parent packages."""
    package({"__init__.py": "", "sub/__init__.py": "", "sub/a.py": "def f():\n    from latentlab import b\n",
             "b.py": "import latentlab.c as c\n", "c.py": "from latentlab.errors import X\n", "errors.py": "X = 1\n",
             "unused.py": ""})
    got = dag.code_closure("latentlab.sub.a")
    assert got == [f"src/latentlab/{f}" for f in ("__init__.py", "b.py", "c.py", "errors.py", "sub/__init__.py",
                                                  "sub/a.py")]


def test_the_issue_cases(stages):
    """embed runs models.encode; a plot is not training code."""
    assert "src/latentlab/models.py" in stages["embed"].code
    assert "src/latentlab/plots.py" not in stages["train"].code
    assert "src/latentlab/plots.py" in stages["evaluate"].code


def test_the_runner_takes_its_order_from_dvc_yaml(stages):
    names = [s.name for s in dag.order(stages, "evaluate")]
    assert names[0] == "download" and names[-1] == "evaluate"
    for s in dag.order(stages, "evaluate"):
        for d in s.deps:  # every input is written by a stage before it
            producer = [p.name for p in stages.values() if d in p.outs]
            assert not producer or names.index(producer[0]) < names.index(s.name)
    assert not {"anomaly_train", "anomaly_score"} & set(names)
    assert [s.name for s in dag.order(stages, "anomaly_evaluate")] == ["download", "anomaly_model", "anomaly_train",
                                                                        "anomaly_score", "anomaly_evaluate"]


def test_the_sweep_cache_key_changes_with_the_code(stages, tmp_path, monkeypatch, tiny_cfg):
    from latentlab import sweep

    s = stages["baselines"]
    before = sweep.stage_key(s, tiny_cfg, {"data/prepared.npz": "k"}, ROOT)
    assert before == sweep.stage_key(s, tiny_cfg, {"data/prepared.npz": "k"}, ROOT)
    monkeypatch.setattr(dag, "fingerprint", lambda module: "edited")
    assert sweep.stage_key(s, tiny_cfg, {"data/prepared.npz": "k"}, ROOT) != before


def test_the_fingerprint_reads_the_code(package):
    pkg = package({"__init__.py": "", "m.py": "x = 1\n"})
    a = dag.fingerprint("latentlab.m")
    (pkg / "m.py").write_text("x = 2\n")
    assert dag.fingerprint("latentlab.m") != a
