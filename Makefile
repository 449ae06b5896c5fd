# The whole set-up on a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := true
export MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK := true

.PHONY: demo test install bench bench-scale bench-dask-parity clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[obd,can-dbc,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/autopdm demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The single-machine targets; bench-scale (10,000 vehicles, ~20 GB peak) and bench-dask-parity are separate.
BENCHES := simulate obd can_import features train service
bench: $(STAMP)
	for b in $(BENCHES); do echo "== benchmarks/bench_$$b.py"; $(BIN)/python benchmarks/bench_$$b.py || exit 1; done

bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py

# Dask vs single-machine training, 2,000 vehicles, 4 split seeds (~25 min on 2 cores)
bench-dask-parity: $(STAMP)
	$(BIN)/python benchmarks/bench_dask_parity.py

clean:
	rm -rf var mlruns .pytest_cache
