# The two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DATA_DIR ?= data
PORT    ?= 8000
# Test processes: most tests wait on fake cloud servers and real server processes, so
# more workers than cores still shortens the run; idle workers steal queued tests.
TEST_WORKERS ?= 4

.PHONY: serve test reliability lint bench proto clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@# An editable install compiles nothing: without bytecode every server start
	@# compiles the ~100 modules of app/ and backends/ again (60-100 ms of each start).
	$(BIN)/python -m compileall -q app backends
	touch $(STAMP)

serve: $(STAMP)  ## install, then start the server on a local data folder
	$(BIN)/dvid-cloud serve --data-dir $(DATA_DIR) --port $(PORT)

# The neuroglancer browser test needs Debian's chromium (no browser download is possible).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) chromium  ## install, lint, then run the whole behavioural suite
	$(BIN)/ruff check app backends tests bench
	$(BIN)/mypy app backends
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=30 $(PYTEST_ARGS)

# The reliability suite (issue 17): the fuzz past 10,000 requests, store faults behind a
# fault-injecting proxy, 50 and more SIGKILLs, 64 clients for 60 s, with and without auth.
# Tests marked `scalable` also run in `make test`, at the small scale their defaults give.
RELIABILITY_SCALE = DVID_FUZZ_CASES=10000 DVID_FUZZ_EXAMPLES=20 DVID_FUZZ_SEQUENCES=200 \
	DVID_TEST_KILLS=16 DVID_TEST_SYNC_KILLS=10 DVID_TEST_EDIT_KILLS=24
reliability: $(STAMP) chromium  ## install, then run the reliability suite at full scale
	$(RELIABILITY_SCALE) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal \
		--durations=15 -rP -m "reliability or scalable" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check app backends tests bench
	$(BIN)/ruff format --check app backends tests bench
	$(BIN)/mypy app backends

bench: $(STAMP)
	$(BIN)/python -m bench.versioned_reads

proto: $(STAMP)  ## regenerate protobuf modules (needs grpcio-tools)
	$(BIN)/pip install --quiet grpcio-tools
	$(BIN)/python -m grpc_tools.protoc -Iapp/proto --python_out=app/proto app/proto/*.proto

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
