# Set-up is part of every target: uv is installed when missing, the locked
# environment is synced, then the command runs in it.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen

.PHONY: uv repro test test-slow test-faults params bench benchmarks clean

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

# The main job: the default pipeline (download -> train -> embed -> cluster/baselines -> evaluate).
repro: uv
	$(RUN) dvc repro

# The default test suite (what CI runs): 18-28 min alone in a fresh clone on 2 cores
# (README, Tests); most of it real DVC pipelines and sweeps.
test: uv
	$(RUN) pytest

# The long checks, marked `slow`.
test-slow: uv
	$(RUN) pytest -m slow

# What the project promises under faults, for real (slow ones included, about 12 min):
# SIGKILL mid-training and resume, unreachable and lost tracking servers, an unwritable
# folder, a full disk, malformed configs and dataset files (hypothesis), 20 jobs at once
# against one `mlflow server`, the same metrics twice.
test-faults: uv
	$(RUN) pytest -m faults

# Rewrite params.yaml from conf/ (DVC does this itself on `dvc exp run`).
params: uv
	$(RUN) python -m latentlab.config

# Full-MNIST benchmark of the default pipeline: stage times, peak memory, scores.
bench: uv
	$(RUN) python bench/full_mnist.py

# Every performance benchmark, one after the other (never two at once: they share 2 cores),
# then BENCHMARKS.md rewritten from their results (about 75 minutes; MNIST from the
# mirror when LATENTLAB_DATA_MIRROR is set).
benchmarks: uv
	$(RUN) python bench/throughput.py --profile
	$(RUN) python bench/fixes.py
	$(RUN) python bench/startup.py
	$(RUN) python bench/scaling.py
	$(RUN) python bench/full_mnist.py --seeds 0 --change cluster.standardize=true --tag default
	$(RUN) python bench/report.py
