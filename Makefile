# Everything a fresh machine needs: `make test` and `make demo` create .venv and install autokd.
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first and pinned: these wheels are the ones known to work together (CPU or CUDA).
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=
# pytest-xdist workers: each test file runs whole on one worker (its module fixtures run once), and
# tests/conftest.py starts the files with the most slow tests first. 0 runs the suite in this process.
TEST_WORKERS ?= 2
XDIST  := -n $(TEST_WORKERS) --dist loadfile

.PHONY: install test test-fast test-oldest-torch demo faults bench bench-smoke clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test,bench]"  # bench: kaleido, for benchmarks/figures.py
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The README's test command: the whole suite, slow tests included.
test: $(STAMP)
	$(BIN)/ruff check autokd tests benchmarks
	$(BIN)/mypy autokd
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# Skip the tests marked slow (a quick loop while editing).
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# The training path's tests under the oldest supported PyTorch (2.11), in a throwaway venv (.ci/torch_oldest.sh).
test-oldest-torch: $(STAMP)
	bash .ci/torch_oldest.sh

# Only the fault-injection tests (kills, bad input, cluster failures).
faults: $(STAMP)
	$(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

# A real search on the embedded default (scikit-learn's digits, offline): a resnet56 teacher trained
# once and cached, 12 students searched under 40 % of its MACs, the front, and the best one exported.
# Run again: the study is resumed (its 12 trials are kept), the front shown and exported again.
DEMO_STUDY ?= demo
demo: $(STAMP)
	$(BIN)/autokd search --teacher resnet56 --flops-budget 40% --study $(DEMO_STUDY)
	$(BIN)/autokd pareto $(DEMO_STUDY)
	$(BIN)/autokd export $(DEMO_STUDY) --best
	@echo "results: studies/$(DEMO_STUDY)/ (Optuna storage: optuna-dashboard sqlite:///studies/$(DEMO_STUDY)/study.db),"
	@echo "         dashboards/$(DEMO_STUDY).html (open in a browser), students/$(DEMO_STUDY)-t*/ (the exported student)"

# The numbers in benchmarks/BENCHMARKS.md: the CPU protocol (over an hour on 2 cores), or every
# part tiny (a few minutes: proves the pipeline runs). On a CUDA GPU: benchmarks/gpu_protocol.sh
# (minutes) or benchmarks/full_protocol.sh (hours).
bench: $(STAMP)
	bash benchmarks/run_all.sh cpu

bench-smoke: $(STAMP)
	bash benchmarks/run_all.sh smoke

clean:
	rm -rf $(VENV) .venv-torch-oldest .pytest_cache
