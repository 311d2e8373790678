# edgecut: `make demo` and `make test` work on a fresh clone; each target creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DATA_DIR ?= .edgecut

.PHONY: venv demo test check lint typecheck bench proto model clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# The reference model is trained once and cached under $(DATA_DIR) (never committed).
model: $(STAMP)
	$(VENV)/bin/edgecut train --data-dir $(DATA_DIR)

demo: $(STAMP)
	$(VENV)/bin/edgecut demo --data-dir $(DATA_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy edgecut

check: lint typecheck
	$(PY) -m pytest -q

test: $(STAMP)
	$(MAKE) check

bench: $(STAMP)
	$(VENV)/bin/edgecut bench all --data-dir $(DATA_DIR)

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. \
		protos/edgecut/v1/fleet.proto protos/edgecut/v1/agent.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
