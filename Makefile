# async_vla_ros: two commands get you going on a fresh machine.
#   make demo   set up (if needed) and run the main job (MuJoCo sim + built-in policy)
#   make test   set up (if needed) and run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo bench clean-build help

help:
	@grep -E '^#   ' Makefile | sed 's/^#   //'

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# unit tests only (no ROS processes, no slow tests)
test-fast: setup
	$(PY) -m pytest -m "not slow and not system" $(PYTEST_ARGS)

demo: setup
	@echo "The main job (the ROS graph on MuJoCo with the shipped checkpoints) arrives with issue 6." ; exit 1

clean-build:
	rm -rf build install log
