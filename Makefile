# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make feeds   build the feeds from seeds/ with config.yaml into feeds/
#   make test    run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: feeds test lint check bench clean

$(BIN)/publisher: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

feeds: $(BIN)/publisher
	$(BIN)/publisher build -c config.yaml

check: $(BIN)/publisher
	$(BIN)/publisher check -c config.yaml

test: $(BIN)/publisher
	$(BIN)/python -m pytest

# Lint and type checks (CI runs them before the tests; either failing fails the run).
lint: $(BIN)/publisher
	$(BIN)/ruff check publisher tests benchmarks
	$(BIN)/mypy --strict publisher

# The performance benchmark (docs/performance.md): make bench SIZE=100k for the full size.
SIZE ?= 10k
bench: $(BIN)/publisher
	$(BIN)/python benchmarks/bench.py --size $(SIZE)

clean:
	rm -rf $(VENV) feeds .publisher .pytest_cache *.egg-info
