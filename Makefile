# The two commands a user needs: `make lab` (install and run the lab) and `make test`.
# Every part of `make test` also runs alone: lint, sanity, unit, molecule, integration.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INVENTORY ?= inventories/lab
PLAYBOOK ?= site.yml
ANSIBLE_ARGS ?=
MOLECULE_SCENARIOS ?= $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
PYTEST_ARGS ?=

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z][a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/activate: requirements/dev.txt serving/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements/dev.txt
	touch $@

.PHONY: serving-constraints
serving-constraints: ## Pin the server image's packages to the tested environment (serving/constraints.txt)
	{ echo "# Pins for the server image (serving/Dockerfile uses this file as PIP_CONSTRAINT): the same"; \
	  echo "# versions as the tested environment. Regenerate with: make serving-constraints"; \
	  grep -vE '^(#|-e)' requirements/dev.txt; } > serving/constraints.txt

.PHONY: venv
venv: $(BIN)/activate ## Create .venv with the pinned Python requirements

LS_VENV ?= .venv-labelstudio
$(LS_VENV)/bin/label-studio: requirements/labelstudio.txt
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -r requirements/labelstudio.txt
	touch $@

# configurable-http-proxy for the real-hub test, from npm at the pinned version (4.6.3: the chart's
# 5.x needs Node 20, Debian 12 has 18), installed exactly as locked (npm ci) into a git-ignored
# directory.
CHP_DIR ?= .npm-chp
$(CHP_DIR)/node_modules/.bin/configurable-http-proxy: requirements/chp/package.json requirements/chp/package-lock.json
	mkdir -p $(CHP_DIR)
	cp requirements/chp/package.json requirements/chp/package-lock.json $(CHP_DIR)/
	npm ci --prefix $(CHP_DIR) --no-audit --no-fund
	touch $@

.PHONY: chp
chp: $(CHP_DIR)/node_modules/.bin/configurable-http-proxy ## Install configurable-http-proxy (npm) for the JupyterHub test

.PHONY: notebook-constraints
notebook-constraints: venv ## Pin the notebook image's packages (notebook/constraints.txt) to the server image's
	$(BIN)/python notebook/lock.py

.PHONY: labelstudio-venv
labelstudio-venv: $(LS_VENV)/bin/label-studio ## Create .venv-labelstudio (Label Studio's pins clash with .venv)

.PHONY: collection
# The link is committed (a fresh clone resolves ailab.platform without this step); the target
# restores it where a copy of the tree lost it.
collection: ## Make sure .collections/ansible_collections/ailab/platform links to this checkout
	@mkdir -p .collections/ansible_collections/ailab
	@ln -sfn ../../.. .collections/ansible_collections/ailab/platform

.PHONY: known-hosts
known-hosts: venv collection ## Record INVENTORY's SSH host keys in ~/.ssh/known_hosts (compare the fingerprints!)
	$(BIN)/ansible-playbook playbooks/known_hosts.yml -i $(INVENTORY) $(ANSIBLE_ARGS)

.PHONY: lab
lab: venv collection ## Install the lab on INVENTORY (default inventories/lab)
	$(BIN)/ansible-playbook $(PLAYBOOK) -i $(INVENTORY) $(ANSIBLE_ARGS)

.PHONY: test
# Molecule and the integration tests run side by side: both spend most of their time waiting
# (containers booting, charts settling, servers starting), and one after the other they took
# about 80 minutes on 2 cores. Lines of the two stay whole (--output-sync=line).
test: lint sanity unit ## Run every test: lint, sanity, unit, then Molecule and integration side by side
	$(MAKE) -j2 --output-sync=line molecule integration

.PHONY: lint
lint: venv collection ## yamllint, ansible-lint (production profile), ruff
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --profile production
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: sanity
sanity: venv ## ansible-test sanity on a copy of the collection
	scripts/sanity.sh

.PHONY: unit
# The collection's tests and the server's run in separate processes: importing ansible's module
# code patches sys.intern, which torch (imported by the server's tests) refuses to trace.
unit: venv collection ## Unit tests (tests/unit, serving/tests/unit)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)
	$(BIN)/pytest serving/tests/unit $(PYTEST_ARGS)

.PHONY: images
images: ## Build the local Docker images that Molecule runs (debootstrap, no Docker Hub)
	molecule/images/build.sh

.PHONY: molecule
molecule: venv collection images ## Every Molecule scenario in molecule/
	@for s in $(MOLECULE_SCENARIOS); do echo "== molecule test -s $$s"; $(BIN)/molecule test -s $$s; done

.PHONY: kube-build
kube-build: ## Build the test control plane (kube-apiserver, etcd, kwok, helm) from Go modules
	tests/kube/build.sh

.PHONY: integration
integration: venv labelstudio-venv chp collection kube-build ## Integration tests against real local services
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)
	$(BIN)/pytest serving/tests/integration $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove the venvs and test outputs
	rm -rf $(VENV) .venv-* $(CHP_DIR) tests/output .pytest_cache .ruff_cache

.PHONY: kube-up
kube-up: kube-build ## Start the test control plane in the background (kubeconfig path printed)
	tests/kube/up.sh

.PHONY: kube-down
kube-down: ## Stop the test control plane started by kube-up
	tests/kube/down.sh
