# Everything a fresh machine needs: `make test` and `make demo` create .venv and install autokd.
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first and pinned: these wheels are the ones known to work together (CPU or CUDA).
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install test test-fast demo faults bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The README's test command: the whole suite, slow tests included.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Skip the tests marked slow (a quick loop while editing).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Only the fault-injection tests (kills, bad input, cluster failures).
faults: $(STAMP)
	$(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

# A real run on the embedded default (scikit-learn's digits, offline).
demo: $(STAMP)
	$(BIN)/autokd train resnet20 --dataset digits --epochs 5

clean:
	rm -rf $(VENV) .pytest_cache
