# Set-up is part of every target: uv is installed when missing, the locked
# environment is synced, then the command runs in it.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen

.PHONY: uv repro demo test test-e2e test-slow params bench results benchmarks clean plots-template

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

# The main job: the default pipeline (download -> train -> embed -> cluster/baselines -> evaluate).
repro: uv
	$(RUN) dvc repro

# The 3-minute demo: the whole clustering pipeline on scikit-learn's bundled 8x8 digits
# (no download), one MLflow run; the dense autoencoder, since 8x8 images leave the conv one's
# three stride-2 layers a 1x1 map (its encoder self-labelled 0.826 ACC against the MLP's 0.876, seed 0);
# one view per relabelling, since rotated copies of 8x8 images misled it (dev seeds 100 / 101: 0.872 / 0.901
# ACC with eight views against 0.875 / 0.930 with one; on MNIST eight views gain, conf/config.yaml); 15 epochs
# (train.min_steps=0: 105 steps), not the default's 3,700-step floor, which adds 3 minutes here for the same
# scores (dev seeds 100 / 101: 0.879 / 0.898 ACC with 15 epochs, 0.876 / 0.881 with 3,700 steps).
demo: uv
	$(RUN) latentlab data=digits model=mlp finetune.views=1 train.min_steps=0

# docs/results.md and the README's results table from the full-MNIST benchmark's JSON
# (`python bench/full_mnist.py --seeds 0 1 2 --tag default` writes it). RESULTS_TAGS names
# the files when the seeds were run in parts, e.g. RESULTS_TAGS="--tag default --tag default-s12";
# --times the run whose stage times are shown: one pipeline alone (`--seeds 0 --tag default-alone`),
# e.g. RESULTS_TAGS="--tag default --times default-alone" (docs/results-alone.md is that alone run's page:
# `python bench/results.py --tag default-alone --out docs/results-alone.md --no-readme`).
RESULTS_TAGS ?= --tag default
results: uv
	$(RUN) python bench/results.py $(RESULTS_TAGS)

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
