# edgecut: `make demo` and `make test` work on a fresh clone; each target creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DATA_DIR ?= .edgecut

.PHONY: venv demo test test-broker test-browser chromium screenshots vendor check lint typecheck bench proto model model-128 clean

venv: $(STAMP)

$(STAMP): pyproject.toml benchmarks/pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]' -e ./benchmarks  # the benches: their own package
	@touch $(STAMP)

# The reference model ships in the package (edgecut/server/mtl/pretrained); this trains it again into
# $(DATA_DIR)/models/reference.pt, which the demo and the benchmarks then use instead.
model: $(STAMP)
	$(VENV)/bin/edgecut train --data-dir $(DATA_DIR)

# A second reference at 128 x 128 for the benchmarks (hours on 2 cores; an interrupted run resumes from
# its .partial). Beside, not instead of, models/reference.pt: the demo and the benches keep the 64 px one
# unless given --checkpoint; `edgecut bench model --checkpoint` renders its section.
model-128: $(STAMP)
	$(VENV)/bin/edgecut train --image-size 128 --data-dir $(DATA_DIR) --out $(DATA_DIR)/models/reference-128.pt

demo: $(STAMP)
	$(VENV)/bin/edgecut demo --data-dir $(DATA_DIR)

# The import contracts (.importlinter; docs/architecture.md): floors, no circles, the agent without torch.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy edgecut benchmarks/edgecut_bench

check: lint typecheck
	$(PY) -m pytest -q

# The broker is EDGECUT_EMBEDDED_BROKER (mosquitto | iotcore), else mosquitto when installed, else iotcore.
test: $(STAMP)
	$(MAKE) check

# Only the tests that start a broker (integration + e2e): .ci/run reruns them on the other broker.
test-broker: $(STAMP)
	$(PY) -m pytest -q -m broker

# Every `edgecut bench` command end to end at its smallest size (tests/e2e/test_bench_*smoke.py), bench
# arm64 included when run as root with debootstrap and qemu-user-static (its aarch64 root is cached in
# $$EDGECUT_ARM64_ROOT, default /var/tmp/edgecut-arm64/root). Measured: 2 min 44 s with the root reused,
# plus 25-36 s for bench paper's quick run (moved here from `make test`); a fresh machine adds
# debootstrap and a full pip install (~4.5 min more): docs/benchmarks.md.
.PHONY: test-bench
test-bench: $(STAMP)
	EDGECUT_BENCH_SMOKE=1 $(PY) -m pytest -q -m bench

# The dashboard's browser tests drive Debian's chromium (Playwright never downloads a browser here);
# without it they skip and say why. Installs it when missing (root and apt needed).
chromium:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test-browser: $(STAMP) chromium
	$(PY) -m pytest -q -m browser

# The three dashboard screenshots in docs/ (README), taken by the browser tests.
screenshots: $(STAMP) chromium
	EDGECUT_SCREENSHOTS_DIR=docs $(PY) -m pytest -q tests/browser/test_screenshots.py

# The chart library, vendored from npm (no CDN at run time): a plain file in the package.
UPLOT_VERSION := 1.6.32
WEB_VENDOR := edgecut/server/web/static/vendor
vendor:
	rm -rf $(VENV)/npm-uplot && mkdir -p $(VENV)/npm-uplot
	cd $(VENV)/npm-uplot && npm pack -q uplot@$(UPLOT_VERSION) && tar xzf uplot-$(UPLOT_VERSION).tgz
	cp $(VENV)/npm-uplot/package/dist/uPlot.iife.min.js $(VENV)/npm-uplot/package/dist/uPlot.min.css $(WEB_VENDOR)/
	cp $(VENV)/npm-uplot/package/LICENSE $(WEB_VENDOR)/uPlot.LICENSE.txt

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
	$(VENV)/bin/edgecut bench precision --data-dir $(DATA_DIR) --rows benchmarks/rows/precision-rows.pkl

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. \
		protos/edgecut/v1/fleet.proto protos/edgecut/v1/agent.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
