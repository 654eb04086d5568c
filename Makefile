# GLO — everything a fresh machine needs goes through these targets.
#   make demo   a small real search end to end on the local backend (MNIST via GLO_DATA_DIR / Keras cache / download)
#   make test   installs everything, then runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out
# Where `make demo`, `make mnist`, `make bench` look for datasets first (the worker also tries the Keras cache).
GLO_DATA_DIR ?= $(if $(wildcard ../shared/data/mnist.npz),$(abspath ../shared/data),)
export GLO_DATA_DIR

.PHONY: install constraints test demo mnist mnist-small example cifar10 lint bench bench-gpu bench-gpu-prepare clean system-deps

install: $(STAMP)

# constraints.txt pins every package to the versions CI tested; `make constraints` moves them forward.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[worker-cpu,test,dev]'
	touch $(STAMP)

# The newest versions setup.cfg's bounds allow, installed into a scratch venv and written to constraints.txt;
# then `make clean test` checks them before they are committed.
constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install -q --upgrade pip
	.venv-constraints/bin/python -m pip install -q '.[worker-cpu,test,dev]'
	{ sed -n '/^#/p' constraints.txt; .venv-constraints/bin/python -m pip freeze --exclude-editable | grep -v '^glo' | sort -f; \
	  .venv-constraints/bin/python -m pip freeze | sed -n 's/^tensorflow[-_]cpu==/tensorflow==/p'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-constraints

# Debian packages the tests use (OpenSSH server for the SSH backend's tests, Chromium for the dashboard's); a no-op
# when present.
system-deps:
	@command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; \
	  else echo "openssh-server missing: run 'sudo apt-get install openssh-server' (SSH tests will be skipped)"; fi; }
	@# headless Chromium and its WebDriver for the dashboard's browser tests (tests/test_dashboard_browser.py)
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium chromium-driver' (browser tests will be skipped)"; fi; }

# Two pytest processes (pytest-xdist), a test file each at a time: the pool, sshd, daemon and browser tests mostly
# wait while the TensorFlow ones compute, so on 2 cores the suite takes ~60 % of its one-process time.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: install system-deps
	$(BIN)/python -m pytest -q --durations=25 $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

lint: install
	$(BIN)/ruff check orchestrator worker condor db tests

# The search, then its best loss against ce on the test set (configs/demo.toml's [experiment]) and the report.
demo: install
	@mkdir -p $(OUT)
	$(BIN)/glo experiment configs/demo.toml --db $(OUT)/demo.db --out $(OUT)/demo
	$(BIN)/glo best demo-search --db $(OUT)/demo.db -k 5
	$(BIN)/glo status demo-search --db $(OUT)/demo.db
	$(BIN)/glo loss plot ce baikal baikal_cma --out $(OUT)/fig6_binary_loss.png
	@echo "database: $(OUT)/demo.db (sqlite3 $(OUT)/demo.db 'select * from leaderboard limit 5')"

# The paper's setups (days on a CPU; resume with: glo run --resume RUN_ID --db ...), where BACKEND says:
#   make mnist                                   local worker processes
#   make mnist BACKEND=condor WORKER_PYTHON=/shared/glo/bin/python   on the pool's submit host
#   make mnist BACKEND=ssh SSH_HOST=submit.example.org WORKER_PYTHON=...   from anywhere, over SSH
# WORKER_PYTHON: the Python with GLO's [worker] extra on the execute nodes; GLO_SET: more KEY=VALUE settings.
BACKEND ?= local
RUN_SETTINGS = --set backend.kind=$(BACKEND) $(if $(SSH_HOST),--set backend.ssh.host=$(SSH_HOST)) \
	$(if $(WORKER_PYTHON),--set "backend.worker_command=$(WORKER_PYTHON) -m worker") $(foreach s,$(GLO_SET),--set $(s))

# Each is `glo experiment`: it prints how long it will take, then runs (or resumes) discovery, the evaluation
# and the report (OUT/<name>/report.md); run it again after a stop and it goes on where it stopped.
mnist: install
	@mkdir -p $(OUT)
	$(BIN)/glo experiment configs/mnist.toml --db $(OUT)/glo.db --out $(OUT)/mnist $(RUN_SETTINGS)

# Your own task (issue 20): scikit-learn's 8x8 digits (no download) and the small CNN beside it, searched and
# the found loss evaluated against ce (examples/digits/; the model module reached through PYTHONPATH).
example: install
	$(BIN)/python -m pip install -q -c constraints.txt 'scikit-learn>=1.3,<2'
	@mkdir -p $(OUT)/digits
	$(BIN)/python examples/digits/make_data.py $(OUT)/digits/digits.npz
	PYTHONPATH=$(CURDIR)/examples/digits$${PYTHONPATH:+:$$PYTHONPATH} $(BIN)/glo experiment examples/digits/digits.toml \
		--db $(OUT)/digits/digits.db --out $(OUT)/digits/report --set 'task.data_path="$(OUT)/digits/digits.npz"'

mnist-small: install
	@mkdir -p $(OUT)
	$(BIN)/glo experiment configs/mnist-small.toml --db $(OUT)/mnist-small.db --out $(OUT)/mnist-small $(RUN_SETTINGS)

# The transfer experiment (Fig. 5): the best loss of `make mnist` (TRANSFER_DB; baikal without one) against ce.
TRANSFER_DB ?= $(OUT)/glo.db
cifar10: install
	@mkdir -p $(OUT)
	$(BIN)/glo experiment configs/cifar10.toml --db $(OUT)/cifar10.db --out $(OUT)/cifar10 \
	  --transfer-from $(TRANSFER_DB) $(RUN_SETTINGS)

# Benchmarks (tests/bench/, bench/README.md): JSON in OUT/bench.json, a short summary in bench/summary.md.
# DEAP is a bench-only dependency (the breeding comparison).
bench: install
	@mkdir -p $(OUT)
	@$(BIN)/python -c 'import deap' 2>/dev/null || $(BIN)/python -m pip install -q 'deap>=1.4'
	$(BIN)/python -m tests.bench --out $(OUT)/bench.json --markdown bench/summary.md

# On a GPU machine: `bash bench/gpu.sh` (what bench-gpu runs) measures evaluations per GPU-hour within 8 minutes.
# bench-gpu-prepare copies mnist.npz into .bench-gpu/data/ (ignored), the folder to send along with the tree.
bench-gpu-prepare:
	@mkdir -p .bench-gpu/data
	@if [ -f .bench-gpu/data/mnist.npz ]; then :; \
	 elif [ -n "$(GLO_DATA_DIR)" ] && [ -f "$(GLO_DATA_DIR)/mnist.npz" ]; then cp "$(GLO_DATA_DIR)/mnist.npz" .bench-gpu/data/; \
	 elif [ -f "$$HOME/.keras/datasets/mnist.npz" ]; then cp "$$HOME/.keras/datasets/mnist.npz" .bench-gpu/data/; \
	 else echo "no mnist.npz found (GLO_DATA_DIR, ~/.keras/datasets): bench-gpu will need GLO_DATA_DIR"; fi

bench-gpu: bench-gpu-prepare
	bash bench/gpu.sh $(OUT)

clean:
	rm -rf $(VENV) $(OUT) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
