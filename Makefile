# Two commands on a fresh machine: `make run` (the demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch; a plain `pip install torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run test bench clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/flexcache demo --json out/demo.json

# `redis` tests need a server: one is started on 127.0.0.1 (port TEST_REDIS_PORT, default 6390)
# for the run and stopped after it, pass or fail; set TEST_REDIS_URL to use your own instead.
test: $(STAMP)
	bash scripts/redis-test-server.sh run $(PY) -m pytest

bench: $(STAMP)
	$(PY) -m pytest bench --benchmark-only

clean:
	rm -rf $(VENV) out .pytest_cache .benchmarks
