# The two commands of the README:
#   make study   — set up (idempotent), then run the whole study on the built-in CPU toy world
#   make test    — set up (idempotent), then run the test suite
# Everything installs into .venv with the exact pins of requirements.lock.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes in first and on its own, so nothing that depends on it pulls a CUDA build on a CPU box.
# Override for another build, e.g. TORCH_PIP_ARGS="--index-url <your CPU wheel index>".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.l2s-setup
STUDY_CONFIG ?= configs/toy.yaml

.PHONY: setup study test test-fast bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m l2s --version
	@touch $(STAMP)

study: setup
	$(PY) -m l2s study --config $(STUDY_CONFIG)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/merge_bench.py
	$(PY) bench/eval_bench.py

clean-venv:
	rm -rf $(VENV)
