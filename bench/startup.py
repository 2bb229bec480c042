"""Benchmark: what a stage pays before it does any work.

Each figure is the median of --repeats fresh processes (imports are cold in each):
the interpreter alone; importing each heavy library; importing a stage's module;
reading and validating params.yaml; composing the Hydra config (what `latentlab`
and `dvc exp run` do); and the MLflow round trip a run makes (create the experiment
if needed, open a run, log a parameter and a metric, close it) against a new sqlite
store, an existing one, and a local `mlflow server` on 127.0.0.1.

    uv run --frozen python bench/startup.py      # -> bench/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (what, code run after `import time; t = time.perf_counter()`; the figure is the time it takes)
IMPORTS = [
    ("python interpreter (no imports)", None),
    ("import numpy", "import numpy"),
    ("import torch", "import torch"),
    ("import pytorch_lightning", "import pytorch_lightning"),
    ("import sklearn (cluster, mixture)", "import sklearn.cluster, sklearn.mixture"),
    ("import umap", "import umap"),
    ("import mlflow", "import mlflow"),
    ("import hydra + omegaconf", "import hydra, omegaconf"),
    ("import every stage's module", "import latentlab.stages." + ", latentlab.stages.".join(
        ["download", "train", "embed", "cluster", "finetune", "baselines", "export", "evaluate"])),
    # umap-learn compiles its numba functions in every process unless they are cached
    # (latentlab.clustering._import_umap); the second and later fresh processes show it.
    ("first UMAP fit (2,000 x 32) in a process, umap-learn as shipped",
     "import numpy as np, umap\nx = np.random.default_rng(0).normal(size=(2000, 32)).astype('float32')\n"
     "umap.UMAP(n_components=10, n_neighbors=20, min_dist=0.0, n_epochs=100, random_state=0).fit_transform(x)"),
    ("first UMAP fit (2,000 x 32) in a process, numba cache (latentlab)",
     "import numpy as np\nfrom latentlab.clustering import make_manifold\n"
     "x = np.random.default_rng(0).normal(size=(2000, 32)).astype('float32')\n"
     "make_manifold({'n_components': 10, 'n_neighbors': 20, 'min_dist': 0.0, 'metric': 'euclidean', "
     "'n_epochs': 100}, 0).fit_transform(x)"),
]
SETUP = "import latentlab.stages.common, latentlab.config, latentlab.tracking\n"
CONFIG = [
    ("read + validate params.yaml", "latentlab.config.load_params('params.yaml')"),
    ("compose conf/ with Hydra", "latentlab.config.compose(['seed=1'])"),
]
# A stage from process start to its first line of work: its imports and params.yaml.
STAGES = [
    ("cluster stage start-up (imports + params)",
     "import latentlab.stages.cluster\nfrom latentlab import config\nconfig.load_params('params.yaml')"),
    ("train stage start-up (imports + params)",
     "import latentlab.stages.train\nfrom latentlab import config\nconfig.load_params('params.yaml')"),
    ("embed stage start-up (imports + params)",
     "import latentlab.stages.embed\nfrom latentlab import config\nconfig.load_params('params.yaml')"),
    ("evaluate stage start-up (imports + params)",
     "import latentlab.stages.evaluate\nimport mlflow\nfrom latentlab import config\n"
     "config.load_params('params.yaml')"),
]
MLFLOW = """
import mlflow
mlflow.set_tracking_uri({uri!r})
t = time.perf_counter()
mlflow.set_experiment('bench')
with mlflow.start_run():
    mlflow.log_param('p', 1)
    mlflow.log_metric('m', 1.0)
"""


def child(code: str, setup: str = "") -> float:
    """Seconds that `code` takes in a fresh interpreter, after `setup`."""
    script = f"import time\n{setup}t = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
    if "t = time.perf_counter()" in code:  # the code starts its own clock
        script = f"import time\n{setup}{code}\nprint(time.perf_counter() - t)"
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode:
        sys.exit(f"benchmark child failed:\n{script}\n{r.stderr}")
    return float(r.stdout.strip().splitlines()[-1])


def interpreter() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", choices=["imports", "config", "mlflow"], help="one group of rows")
    a = p.parse_args()
    rows = []

    def measure(what: str, fn) -> None:
        times = [fn() for _ in range(a.repeats)]
        rows.append({"what": what, "median_s": statistics.median(times), "times": times})
        print(f"{what}: {statistics.median(times):.2f} s", flush=True)

    measure(IMPORTS[0][0], interpreter)
    interpreter_s = rows[0]["median_s"]
    if a.only in (None, "imports"):
        for what, code in IMPORTS[1:]:
            measure(what, lambda c=code: child(c))
    if a.only in (None, "config"):
        for what, code in CONFIG:
            measure(what, lambda c=code: child(c, SETUP))
        for what, code in STAGES:
            measure(what, lambda c=code: child(c) + interpreter_s)
    with tempfile.TemporaryDirectory() as tmp:
        if a.only not in (None, "mlflow"):
            return finish(a, rows)
        new = iter(range(10**6))
        measure("MLflow run on a new sqlite store (creates its tables)",
                lambda: child(MLFLOW.format(uri=f"sqlite:///{tmp}/new{next(new)}.db"), "import mlflow\n"))
        child(MLFLOW.format(uri=f"sqlite:///{tmp}/old.db"), "import mlflow\n")
        measure("MLflow run on an existing sqlite store",
                lambda: child(MLFLOW.format(uri=f"sqlite:///{tmp}/old.db"), "import mlflow\n"))
        port = free_port()
        server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                                   "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp}/server.db",
                                   "--default-artifact-root", f"{tmp}/artifacts"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            measure("MLflow run on a local `mlflow server` (REST)",
                    lambda: child(MLFLOW.format(uri=f"http://127.0.0.1:{port}"), "import mlflow\n"))
        finally:
            server.terminate()
            server.wait()
    finish(a, rows)


def finish(a: argparse.Namespace, rows: list[dict]) -> None:
    result = {"machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
              "python": platform.python_version(), "repeats": a.repeats, "rows": rows}
    out = ROOT / "bench" / "results" / f"startup{'-' + a.only if a.only else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("\n| step | median (s) |\n| --- | ---: |")
    for r in rows:
        print(f"| {r['what']} | {r['median_s']:.2f} |")
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
