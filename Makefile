# The whole set-up on a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := true
export MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK := true

.PHONY: demo test test-all install chromium bench bench-scale bench-store bench-model-quality bench-dask-parity mutation-check clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[obd,can-dbc,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/autopdm demo

# The /ui browser test drives Debian's chromium through Playwright (which cannot download a browser here).
# Installed only when missing, and only where apt-get can be used (as root, or with password-less sudo);
# elsewhere the browser test skips and says why.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "chromium: missing and no apt-get here; the /ui browser test will skip"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	elif sudo -n true 2>/dev/null; then sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "chromium: missing and apt-get needs root; the /ui browser test will skip"; fi

# two workers, one test file at a time each (module fixtures are built once); `pytest` alone runs in one process.
# CI runs `test`; `test-all` adds the heavy tests (minutes of training on larger fleets) — run it before a release.
test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25 -m "not heavy"

test-all: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

# The single-machine targets; bench-scale (2,000 and 10,000 vehicles, each step under 8 GB), bench-store
# (100k files) and bench-dask-parity are separate.
BENCHES := simulate obd can_import features train service reminders
bench: $(STAMP)
	for b in $(BENCHES); do echo "== benchmarks/bench_$$b.py"; $(BIN)/python benchmarks/bench_$$b.py || exit 1; done

# Model quality against the baselines and the physical ceiling at the size the targets name:
# 3 held-out fleets of 2,000 vehicles × 730 days (docs/model-quality.md; 400 vehicles by default)
bench-model-quality: $(STAMP)
	$(BIN)/python benchmarks/bench_model_quality.py --vehicles 2000 --days 730 --seeds 101,102,103

bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py

bench-store: $(STAMP)
	$(BIN)/python benchmarks/bench_store.py

# Dask vs single-machine training, 2,000 vehicles, 4 split seeds (~25 min on 2 cores)
bench-dask-parity: $(STAMP)
	$(BIN)/python benchmarks/bench_dask_parity.py

# Before a release, not in every CI run: break each durability promise in a copy of the code and
# check that a test fails (scripts/mutation_check.py; docs/reliability.md). ~20 min on 2 cores.
mutation-check: $(STAMP)
	$(BIN)/python scripts/mutation_check.py

clean:
	rm -rf var mlruns .pytest_cache
