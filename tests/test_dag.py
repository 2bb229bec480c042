"""dvc.yaml is honest: each stage lists exactly the code its command imports and the params
it reads, and the in-process sweep runner follows the same graph."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import ROOT, with_value
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


class Reading(dict):
    """A plain config (a real dict, as stages get one) that notes the key paths a stage
    touches (``reads.touched``) and the sections it takes whole (``reads.whole``: their
    values iterated, copied, logged, instantiated or pickled). Listing a section's keys
    reads none of their values."""

    def __init__(self, data: dict, reads: SimpleNamespace, path: tuple = ()):
        super().__init__({k: Reading(v, reads, (*path, k)) if isinstance(v, dict) else v for k, v in data.items()})
        self._reads, self._path = reads, path

    def _touch(self, key) -> None:
        self._reads.touched.add((*self._path, key))

    def _whole(self) -> None:
        self._reads.whole.add(self._path)

    def __getitem__(self, key):
        self._touch(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._touch(key)
        return super().get(key, default)

    def __contains__(self, key):
        self._touch(key)
        return super().__contains__(key)

    def items(self):
        self._whole()
        return super().items()

    def values(self):
        self._whole()
        return super().values()

    def __deepcopy__(self, memo):  # copied as a plain dict
        self._whole()
        return copy.deepcopy(plain(self), memo)


def plain(obj):
    """``obj`` with every Reading in it a plain dict, noted as read whole (torch.save of a
    checkpoint's copy of a section: a weights-only load accepts plain containers only)."""
    if isinstance(obj, Reading):
        obj._whole()
        return {k: plain(v) for k, v in dict.items(obj)}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def read_keys(reads: SimpleNamespace, cfg: dict) -> set[str]:
    """The dotted keys a stage depends on: every section it took whole, every leaf it read,
    and every section it touched without looking inside (passed on, compared to None)."""
    def is_section(path):
        node = cfg
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return isinstance(node, dict)

    events = reads.touched | reads.whole
    keys = {p for p in reads.whole if p}
    keys |= {p for p in reads.touched if not is_section(p) or not any(len(e) > len(p) and e[:len(p)] == p
                                                                      for e in events)}
    return {".".join(map(str, p)) for p in keys}


def listed_keys(stage: dag.Stage) -> set[str]:
    """The params.yaml keys a dvc.yaml stage lists (not those of its other params files)."""
    out = set()
    for entry in stage.params:
        if isinstance(entry, str):
            out.add(entry)
        else:
            out.update(entry.get("params.yaml", []))
    return out


def covered(key: str, listed: set[str]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in listed)


# Keys a stage reads only to refuse a config before its long work, not to make its output.
GUARDS = {"train": {"cluster.k", "cluster.select_k", "cluster.k_range"},  # k larger than the samples
          "download": {"anomaly.protocol", "anomaly.normal", "anomaly.anomalous"}}  # classes the labels lack


@pytest.mark.parametrize("task", ["cluster", "anomaly"])
def test_every_stage_lists_exactly_the_params_it_reads(task, tmp_path, monkeypatch, tiny_cfg):
    """DVC reruns a stage, and the sweep runner keys its cache, on the params dvc.yaml lists:
    a key a stage reads but does not list serves a stale output when it changes; one it lists
    but never reads reruns it for nothing. Each stage of the branch runs in-process (the sweep
    runner, on a tiny real run) on a config that notes every key it reads."""
    import torch

    from latentlab import sweep

    # fraction < 1: the self-labellings also rank their clusters' members (the branch that reads more);
    # DEC on: off, its stages read only dec.enabled
    cfg = {**tiny_cfg, "task": task}
    for key, value in {"finetune.fraction": 0.9, "dec.enabled": True, "dec.steps": 3, "dec.update": 2, "data.max_train": 800, "data.max_test": 200, "train.max_epochs": 1,
                       "anomaly.max_epochs": 1, "finetune.epochs": 1, "finetune.min_steps": 1}.items():
        cfg = with_value(cfg, key, value)  # what a stage reads does not depend on how much it computes
    reads: dict[str, SimpleNamespace] = {}
    timed = sweep.timed

    def noting(fn, c, *args, run_id=None, **kwargs):  # as DVC calls it: no sweep's run to log into
        reads[fn.__name__] = SimpleNamespace(touched=set(), whole=set())
        return timed(fn, Reading(c, reads[fn.__name__]), *args, **kwargs)

    monkeypatch.setattr(sweep, "timed", noting)
    save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, *a, **kw: save(plain(obj), *a, **kw))
    monkeypatch.setenv(sweep.CACHE_ENV, str(tmp_path / "cache"))
    sweep.run_pipeline(cfg, tmp_path / "job")

    stages = dag.load(ROOT, cfg)
    ran = [s.name for s in dag.order(stages, sweep.TARGETS[task])]
    assert sorted(reads) == sorted(ran)
    wrong = {}
    for name in ran:
        read, listed = read_keys(reads[name], cfg) - GUARDS.get(name, set()), listed_keys(stages[name])
        unlisted = sorted(k for k in read if not covered(k, listed))
        unread = sorted(p for p in listed if not any(covered(k, {p}) or covered(p, {k}) for k in read))
        if unlisted or unread:
            wrong[name] = {"read, not listed": unlisted, "listed, never read": unread}
    assert not wrong, f"dvc.yaml's params differ from what the stages read: {wrong}"
