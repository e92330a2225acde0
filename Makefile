# Thin targets: each calls a script. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

.PHONY: help install run test lint bench bench-quick clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: ## Install system packages (as root) and the locked Python environment in .venv
	@scripts/bootstrap.sh

run: install ## Start the whole stack locally: PostgreSQL, Mosquitto, collector, API, simulator
	@.venv/bin/python scripts/run_stack.py

test: ## Install what the suite needs, lint, type-check and run every test against real servers
	@scripts/bootstrap.sh test
	@scripts/test.sh

lint: install ## ruff check, ruff format --check and mypy --strict only
	@scripts/lint.sh

bench: ## Run the benchmark suite and write docs/benchmarks.md (about 30 minutes)
	@scripts/bootstrap.sh bench
	@.venv/bin/python -m scripts.bench --full

bench-quick: ## Smoke-run the benchmarks with tiny sizes (under 2 minutes)
	@scripts/bootstrap.sh bench
	@.venv/bin/python -m scripts.bench --quick

clean: ## Remove the local stack's data (.run) and caches
	@rm -rf .run .mypy_cache .ruff_cache .pytest_cache
