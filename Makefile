# Set-up and the two everyday commands. Both create .venv on first use:
#   make run    the main job (dropkit run, the default experiment)
#   make test   the whole test suite
#
# torch==2.13.0 (a CPU build) is installed before the project on purpose:
# anything that pulls torch in first, or a looser pin, fetches a CUDA build of
# several GB.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dropkit-installed

.PHONY: run test demo bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[all]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dropkit run

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/dropkit demo

bench: $(STAMP)
	$(BIN)/dropkit bench

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
