# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# CPU torch by default; for CUDA: make TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>" demo
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED = false
export GX_ANALYTICS_ENABLED = false
export RAY_AUTH_MODE = disabled
export RAY_USAGE_STATS_ENABLED = 0

.PHONY: venv chromium demo test bench clean

$(STAMP): pyproject.toml constraints.txt Makefile
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

venv: $(STAMP) chromium

# The review app's browser test drives Debian's chromium (never a browser Playwright downloads).
# Installed where apt-get runs as root (CI); elsewhere the test skips and says why.
chromium:
	@command -v chromium >/dev/null || [ ! -x /usr/bin/apt-get ] || [ "$$(id -u)" != 0 ] || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: could not install Debian chromium; the browser test will be skipped"

demo: $(STAMP)
	$(BIN)/loupe demo --out demo

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) demo
