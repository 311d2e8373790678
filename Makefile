# edgecut: `make demo` and `make test` work on a fresh clone; each target creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DATA_DIR ?= .edgecut

.PHONY: venv demo test test-broker check lint typecheck bench proto model clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# The reference model ships in the package (edgecut/server/mtl/pretrained); this trains it again into
# $(DATA_DIR)/models/reference.pt, which the demo and the benchmarks then use instead.
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

# The broker is EDGECUT_EMBEDDED_BROKER (mosquitto | iotcore), else mosquitto when installed, else iotcore.
test: $(STAMP)
	$(MAKE) check

# Only the tests that start a broker (integration + e2e): .ci/run reruns them on the other broker.
test-broker: $(STAMP)
	$(PY) -m pytest -q -m broker

# Every figure in docs/benchmarks.md, each benchmark rewriting only its own section.
bench: $(STAMP)
	$(VENV)/bin/edgecut bench model --data-dir $(DATA_DIR)
	$(VENV)/bin/edgecut bench tailor --data-dir $(DATA_DIR)
	$(VENV)/bin/edgecut bench prune --data-dir $(DATA_DIR)
	$(VENV)/bin/edgecut bench download
	$(VENV)/bin/edgecut prune --data-dir $(DATA_DIR) --tasks seg,depth --budget macs=0.3 --recover-steps 0 \
		--out $(DATA_DIR)/bench/seg-depth-rpi4.onnx
	$(VENV)/bin/edgecut prune --data-dir $(DATA_DIR) --tasks seg,depth,normals --budget macs=0.5 --recover-steps 0 \
		--out $(DATA_DIR)/bench/seg-depth-normals-jetson.onnx
	$(VENV)/bin/edgecut bench swap --models $(DATA_DIR)/bench/seg-depth-rpi4.onnx \
		$(DATA_DIR)/bench/seg-depth-normals-jetson.onnx
	$(VENV)/bin/edgecut bench paper --data-dir $(DATA_DIR)
	$(VENV)/bin/edgecut bench generality --data-dir $(DATA_DIR)

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. \
		protos/edgecut/v1/fleet.proto protos/edgecut/v1/agent.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
