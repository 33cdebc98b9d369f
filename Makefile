# The two front-door commands: `make run` serves the demo site, `make test` runs every test.
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench geo

run:
	scripts/bootstrap.sh run
	$(BIN)/consent-gateway geo build --if-missing || \
	  echo "make run: no embedded geo database; visitors are placed by CDN headers or GATEWAY_GEOIP_DB"
	$(BIN)/consent-gateway serve --host $(HOST) --port $(PORT)

test:
	scripts/bootstrap.sh test
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy
	$(BIN)/python -m gateway.cli.docs --check
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy
	$(BIN)/python -m gateway.cli.docs --check

bench:
	$(BIN)/python -m bench.serve
	$(BIN)/python -m bench.protocol
	$(BIN)/python -m bench.record
	$(BIN)/python -m bench.snippet
	$(BIN)/python -m bench.standards
	$(BIN)/python -m bench.workers
	$(BIN)/python -m bench.jetstream

geo:
	$(BIN)/consent-gateway geo build
