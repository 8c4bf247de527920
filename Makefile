# One entry point for humans and CI. `make test` works on a fresh clone with
# nothing installed: it creates .venv, installs the pinned CPU torch first (an
# unpinned torch drags several GB of CUDA wheels), then the project with its
# extras, then runs the fast suite.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_VERSION := 2.13.0
EXTRAS ?= train,dev,ray,export,serve,proto
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
comma  := ,
PYTEST_ARGS ?=

.PHONY: install test test-slow test-all lint format typecheck bench results proto demo clean

$(PY):
	@echo "[install 1/4] creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "[install 2/4] upgrading pip"
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@echo "[install 3/4] torch==$(TORCH_VERSION), the CPU build (about a minute)"
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	@echo "[install 4/4] the project with extras $(EXTRAS) (a few minutes on a fresh venv)"
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	@# onnxruntime and onnxruntime-gpu share one module directory: never both
	@if $(PIP) show --quiet onnxruntime >/dev/null 2>&1 && $(PIP) show --quiet onnxruntime-gpu >/dev/null 2>&1; then \
		echo "both onnxruntime and onnxruntime-gpu are installed in $(VENV); uninstall both, then rerun make" >&2; exit 1; fi
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) bench/features.py

# the quick-protocol backtests of docs/results.md (about an hour on 2 cores; resumable)
results: $(STAMP)
	$(VENV)/bin/momentum-train results --out runs/results

# the whole product on the embedded data: backtest, export, replay, serve, positions over gRPC
# (DEMO_QUICK=1 for the short variant CI runs)
demo: $(STAMP)
	bash scripts/demo.sh

# gRPC stubs of proto/ into service/_proto (committed; a test diffs them against a regeneration)
proto: $(STAMP)
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
