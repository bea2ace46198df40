# Set-up and the two everyday commands. Both create .venv on first use:
#   make run    the main job (dropkit run, the default experiment)
#   make test   the whole test suite
#
# torch==2.13.0 (a CPU build) is installed before the project on purpose:
# anything that pulls torch in first, or a looser pin, fetches a CUDA build of
# several GB.
#
# Two stamps: `make run` installs only what running needs (the experiments
# extra); `make test` adds the test tools on top, so `make test` after
# `make run` installs just those.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.dropkit-run
TEST_STAMP := $(VENV)/.dropkit-test

.PHONY: run test demo bench lint clean

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[experiments]"
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install -e ".[all]"
	touch $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/dropkit run

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

demo: $(RUN_STAMP)
	$(BIN)/dropkit demo

bench: $(RUN_STAMP)
	$(BIN)/dropkit bench

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
