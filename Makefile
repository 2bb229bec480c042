# Set-up is part of every target: uv is installed when missing, the locked
# environment is synced, then the command runs in it.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen

.PHONY: uv repro demo demo-seeds tables study test test-e2e test-slow params bench results benchmarks clean plots-template

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

# The main job: the default pipeline (download -> train -> embed -> cluster/baselines -> evaluate).
repro: uv
	$(RUN) dvc repro

# The demo: the whole clustering pipeline on scikit-learn's bundled 8x8 digits (no download), one
# MLflow run, about 2 minutes; the dense autoencoder (8x8 is too small for the conv one's three
# stride-2 layers), one view per relabelling, 15 epochs (docs/guide.md#the-demo says why).
DEMO := data=digits model=mlp finetune.views=1 train.min_steps=0
demo: uv
	$(RUN) latentlab $(DEMO)

# The demo over seeds 0-4, one after the other (about 8 minutes): the README's demo figures,
# docs/results-demo.md (the study pipelines/demo; its records are in git).
demo-seeds: uv
	$(RUN) dvc repro pipelines/demo/dvc.yaml

# The README's own-data command on iris, wine and breast cancer, seeds 0-2 (about 15 minutes):
# docs/results-tables.md (the study pipelines/tables).
tables: uv
	$(RUN) dvc repro pipelines/tables/dvc.yaml

# Any study: `make study S=anomaly` (pipelines/README.md lists them; MNIST from ../shared/datasets
# when it is there, else LATENTLAB_DATA_MIRROR or the internet). The bench group adds PyOD (pyod study).
study: uv
	$(UV) run --frozen --group bench dvc repro pipelines/$(S)/dvc.yaml

# docs/results.md and the README's results table: the default's seeds 0-2 on full MNIST (hours; a
# seed whose code and config did not change is not run again).
results: uv
	$(RUN) dvc repro pipelines/default/dvc.yaml

# `dvc plots show`'s page with the vega libraries inlined (.dvc/config: plots.html_template), so
# that its plots render offline; committed, rebuilt only when DVC asks for other vega versions.
plots-template: uv
	$(RUN) python .dvc/offline_plots.py

# The tests in tiers (README, Tests). `make test`, the README's test command: unit tests,
# the stage functions in-process on one small real run, and one real small `dvc repro`
# (under 5 min in a fresh clone on 2 cores: two pytest workers, a test file each, since most
# of a stage's start-up is single-threaded imports; test_pipeline.py's `dvc repro` first, not
# pytest-xdist's default of the files with most tests first, which left it to run alone at the
# end: 172-174 s against 177-220 s, warm, this machine). `make test-e2e`: the real multi-process
# checks: sweeps with every launcher, the DVC queue, a tracking server, DDP, push/pull
# and the fault checks (kill and resume, lost servers, full disks, 20 jobs at once).
# `make test-slow`: full-MNIST checks, benchmarks in all but name. CI runs test and test-e2e.
test: uv
	$(RUN) pytest -n 2 --dist loadfile --no-loadscope-reorder

test-e2e: uv
	$(RUN) pytest -m e2e

test-slow: uv
	$(RUN) pytest -m slow

# Rewrite params.yaml from conf/ (DVC does this itself on `dvc exp run`).
params: uv
	$(RUN) python -m latentlab.config

# One `dvc repro` of the main job on full MNIST in a fresh copy: stage times, peak memory, scores
# (bench/results/full_mnist.json, a look; the recorded figures are the studies').
bench: uv
	$(RUN) python pipelines/full_mnist.py

# Every performance benchmark, one after the other (never two at once: they share 2 cores),
# then BENCHMARKS.md rewritten from their results (about 75 minutes; MNIST from the
# mirror when LATENTLAB_DATA_MIRROR is set).
benchmarks: uv
	$(RUN) python bench/throughput.py --profile
	$(RUN) python bench/fixes.py
	$(RUN) python bench/startup.py
	$(RUN) python bench/scaling.py
	$(RUN) python pipelines/full_mnist.py --seeds 0 --change cluster.standardize=true --tag default
	$(RUN) python bench/report.py
