# Two commands on a fresh machine: `make demo` and `make test`. Each sets up its own environment
# from the lockfile (uv.lock) first; nothing needs installing by hand beyond Python 3.11+.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test test-fast bench lint env clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# Byte-compiled up front: task processes import from a fresh interpreter each time, and where
# PYTHONDONTWRITEBYTECODE is set they would otherwise recompile every module on every import.
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	$(VENV)/bin/python -m compileall -q airflow_repro
	touch $@

env: $(VENV)/.synced

demo: env
	$(VENV)/bin/python scripts/demo.py

test: env
	$(VENV)/bin/pytest

# The fast tier: everything but the tests marked slow (tests/conftest.py marks the api and e2e folders
# and every test that starts a real MLflow, PostgreSQL or api-server). About a minute; `make test` runs all.
test-fast: env
	$(VENV)/bin/pytest -m "not slow"

bench: env
	$(VENV)/bin/python bench/bench_store_hash.py --size-mib 1024
	$(VENV)/bin/python bench/bench_overhead.py
	$(VENV)/bin/python bench/bench_replay.py
	$(VENV)/bin/python bench/bench_restore.py

# What CI checks before the tests: lint rules, formatting, and types (strict for core and adapters).
LINTED := airflow_repro tests bench scripts dags
lint: env
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy airflow_repro

clean:
	rm -rf $(VENV) $(TOOLS) .repro-demo .bench
