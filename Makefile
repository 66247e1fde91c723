# Entry points for users and CI. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KAFKA := deploy/kafka/kafka.sh
DATA_DIR ?= $(or $(CLICKSTREAM_DATA_DIR),$(wildcard ../shared/data))
DOCS_BUILD = NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .state/site

.PHONY: help install kafka-up kafka-down kafka-status lint docs test test-unit test-integration demo bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/clickstream: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

install: $(BIN)/clickstream  ## create .venv and install the project with its dev extras, at the tested versions

kafka-up:  ## start the local Kafka broker (a no-op when it runs)
	$(KAFKA) up

kafka-down:  ## stop the local Kafka broker
	$(KAFKA) down

kafka-status:  ## is the local broker running?
	$(KAFKA) status

lint: install  ## ruff, the import-linter contracts that keep the layers pointing down (pyproject.toml), the docs build
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(DOCS_BUILD)

docs: install  ## the documentation site (mkdocs.yml) into .state/site; a broken link or a missing page fails it
	$(DOCS_BUILD)

test: install kafka-up lint  ## lint, then every test against the local broker
	CLICKSTREAM_DATA_DIR=$(DATA_DIR) $(BIN)/pytest -q tests

test-unit: install  ## tests that need no broker
	CLICKSTREAM_DATA_DIR=$(DATA_DIR) $(BIN)/pytest -q tests/unit

demo: install  ## install, start the broker, train a model, run the worker, replay clicks, show predictions
	CLICKSTREAM_DATA_DIR=$(DATA_DIR) deploy/demo.sh

bench: install kafka-up  ## every benchmark (needs a model: make demo or clickstream train); results/ has the figures
	CLICKSTREAM_DATA_DIR=$(DATA_DIR) $(BIN)/python -m benchmarks all

clean:  ## remove the venv and all local state (broker data included)
	-$(KAFKA) down
	rm -rf $(VENV) .state artifacts results
