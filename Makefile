# Set-up and the project's commands. Every target installs what it needs first (idempotent).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch from the local wheel; a torch that is already importable (e.g. a CUDA build) is kept.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test test-all bench checks clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH_PIN)"
	$(BIN)/python -m pip install -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(BIN)/python -m benchmarks reproduce --preset quick --out runs/quick --workers auto

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

bench: install
	@mkdir -p .benchmarks
	$(BIN)/python -m pytest benchmarks -q -p no:cacheprovider -o python_files="bench_*.py" --benchmark-only \
		--benchmark-columns=min,median,max,rounds --benchmark-json=.benchmarks/latest.json

checks: install
	$(BIN)/python -m checks --full

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks *.egg-info
