# async_vla_ros: two commands get you going on a fresh machine.
#   make demo   set up (if needed) and run the main job (MuJoCo sim + built-in policy)
#   make test   set up (if needed) and run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-fast lint demo bench clean-build help

help:
	@grep -E '^#   ' Makefile | sed 's/^#   //'

setup:
	@bash scripts/setup.sh

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff: lint rules and formatting as configured in pyproject.toml
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# unit tests only (no ROS processes, no slow tests)
test-fast: setup
	$(PY) -m pytest -m "not slow and not system" $(PYTEST_ARGS)

# the main job; e.g. make demo DEMO_ARGS="--task intercept --method remac_rtc --duration 60"
DEMO_ARGS ?=
demo: setup
	$(PY) -m async_vla_ros.cli demo $(DEMO_ARGS)

clean-build:
	rm -rf build install log
