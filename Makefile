# Two commands do everything: `make repro` (install, then run the pipeline) and `make test`.
# Both create .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Local and quiet: no telemetry, no hub downloads; Ray only for holders of the user's token.
export RAY_AUTH_MODE ?= token
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

repro: $(STAMP)
	dvc repro

# pytest exits 5 when it collected no tests: that is a broken suite, not a pass.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check soo stages flows tests benchmarks
	$(BIN)/ruff format --check soo stages flows tests benchmarks

clean:
	rm -rf $(VENV)
