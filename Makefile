# From a fresh clone: `make demo` runs the main job, `make test` runs every test.
# Both create the virtual environments they need; nothing else must be installed by hand.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
VENV_TFLITE := .venv-tflite
PY := $(VENV)/bin/python
PIP_FLAGS := --disable-pip-version-check --no-input -q

.PHONY: help venv venv-tflite lint validate plan test test-unit test-integration test-tflite-runtime crash demo demo-device bench bench-fleet models clean

help:
	@echo "make demo   - run the main job on the built-in simulated fleet"
	@echo "make test   - lint + all tests (both TFLite backends, crash harness)"
	@echo "make bench  - runtime benchmarks, printed as a table (make bench-fleet: fleet benchmark)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[litert,control,dev]'
	touch $@

venv: $(VENV)/.installed

# tflite-runtime only works with numpy<2, so it gets its own environment.
$(VENV_TFLITE)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_TFLITE)
	$(VENV_TFLITE)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_TFLITE)/bin/python -m pip install $(PIP_FLAGS) -e '.[tflite-runtime]' pytest
	touch $@

venv-tflite: $(VENV_TFLITE)/.installed

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) scripts/check_argument_specs.py
	$(VENV)/bin/yamllint -s .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/ansible-lint --offline -q

# What a pull request would change: every device's version from -> to and its wave; changes nothing.
plan: validate
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/ansible-playbook playbooks/deploy.yml --check --diff

# models.yaml against its schema, the inventory and the (demo) registry: the same check CI runs before merge.
validate: venv
	$(PY) scripts/build_registry.py >/dev/null
	$(PY) scripts/validate_models.py models.yaml --inventory inventory/local

test-unit: venv
	$(PY) -m pytest -q tests/unit

test-integration: venv
	$(PY) -m pytest -q tests/integration

# The same runtime tests again, with the tflite-runtime backend forced.
test-tflite-runtime: venv-tflite
	EDGE_RUNTIME_BACKEND=tflite-runtime $(VENV_TFLITE)/bin/python -m pytest -q -m tflite_runtime tests/integration

crash: venv
	$(PY) tests/crash_harness.py --random 300

test: lint validate venv-tflite
	$(PY) -m pytest -q tests
	EDGE_RUNTIME_BACKEND=tflite-runtime $(VENV_TFLITE)/bin/python -m pytest -q -m tflite_runtime tests/integration

demo: venv
	$(PY) scripts/demo.py

demo-device: venv
	$(PY) scripts/demo_device.py

bench: venv
	$(PY) bench/run.py

# Fleet benchmark on the local fleet at 10, 50 and 200 devices (~15 min on 2 cores).
bench-fleet: venv
	$(PY) bench/fleet.py

# Regenerating the committed demo models needs TensorFlow (the `train` extra).
models:
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/python -m pip install $(PIP_FLAGS) tensorflow-cpu ai-edge-litert
	.venv-train/bin/python scripts/train_demo_models.py --out demo/models

clean:
	rm -rf .state reports .pytest_cache .mypy_cache .ruff_cache
