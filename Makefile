# The two set-up commands of the README. Each creates .venv when missing, installs a CPU torch
# when no torch is present (so a CPU machine never pulls CUDA), installs medmim, then runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medmim-installed

.PHONY: setup demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/medmim demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check medmim tests benchmarks
	$(BIN)/ruff check medmim tests benchmarks

bench: $(STAMP)
	$(BIN)/medmim bench

clean:
	rm -rf runs .pytest_cache
