# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REAL_SERVER_DIR ?= $(HOME)/.cache/turnbench/real-server
SHARED := ../shared

.PHONY: demo test lint typecheck pytest real-server chromium bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/turnbench run examples/demo.yaml

# Builds llama.cpp's server from ../shared/real-server when that folder is there
# (CI and developers have it; ~7 min the first time, reused after).
real-server:
	@if [ -x $(SHARED)/real-server/setup.sh ] || [ -f $(SHARED)/real-server/setup.sh ]; then \
		bash $(SHARED)/real-server/setup.sh $(REAL_SERVER_DIR); \
	else echo "no $(SHARED)/real-server: the real-server test will be skipped"; fi

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(BIN)/.installed-dev
	$(BIN)/mypy

# Most tests spend their time waiting on the processes they start (runs of a fixed duration,
# simulators), so three run at once even on 2 cores (~10 min, from ~22 one at a time); the
# `serial` ones (llama.cpp on the CPU, two runs' latency tails compared) run after them, alone,
# whatever the first part's outcome (make fails if either part did).
PYTEST_WORKERS ?= 3
pytest: $(BIN)/.installed-dev
	TURNBENCH_REAL_SERVER=$(REAL_SERVER_DIR) $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup \
		-m "not serial"; status=$$?; \
	TURNBENCH_REAL_SERVER=$(REAL_SERVER_DIR) $(BIN)/pytest -m serial && exit $$status

# Debian's chromium for the report's browser tests (tests/test_report_browser.py); Playwright
# drives it and never downloads a browser of its own.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
		else echo "no /usr/bin/chromium: run 'sudo apt-get install -y chromium' (browser tests skip)"; fi; \
	fi

test: lint typecheck real-server chromium pytest

# Client throughput benchmark (nginx + wrk from Debian, ~6 min): bench/README.md.
bench: $(BIN)/.installed
	$(BIN)/python bench/throughput/run.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
