# tiltbench: `make demo` and `make test` each set up everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TILTBENCH_DATA_DIR ?= $(abspath ../shared/data)
export TOKENIZERS_PARALLELISM := false

.PHONY: help install demo test test-slow lint regress regress-baseline clean

help:
	@echo "make install  create .venv (torch==2.13.0 CPU first, then tiltbench[dev])"
	@echo "make demo     fine-tune MiniLM on SST-2 at tilt rate 0.1, offline-tune it -> results/demo/"
	@echo "make test     run the test suite"
	@echo "make lint     ruff"
	@echo "make regress  fine-tune + sweep a few tilt rates + quick calibration; check them against results/ci-baseline"
	@echo "              and the calibrated latency model (CI runs it)"

install: $(STAMP)

# torch first: pinning 2.13.0 takes the local CPU wheel; any other torch requirement pulls CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded default (MiniLM + SST-2): fine-tune with elimination on, then offline-tune.
DEMO := results/demo
demo: install
	$(BIN)/tiltbench finetune --task sst2 --max-train-samples 8000 --max-seq-len 64 --tilt-rate 0.1 \
		--epochs 1 --seed 0 --output $(DEMO)/checkpoint --overwrite
	$(BIN)/tiltbench offline-tune $(DEMO)/checkpoint --tilt-rates 0:0.5:0.05 --output $(DEMO) --overwrite

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check tiltbench tests benchmarks
	$(BIN)/ruff format --check tiltbench tests benchmarks

# CI regression run: a short fine-tune and sweep, held to the committed baseline and to the calibrated latency
# model of this very machine (a quick calibration, about 2 minutes). Only ratios measured within one run
# (speedups) and metrics are compared, never absolute times.
REGRESS := runs/regress
REGRESS_SWEEP := --checkpoint $(REGRESS)/checkpoint --tilt-rates 0,0.2,0.4 --batch-sizes 1,16 \
	--latency-examples 128 --results-dir $(REGRESS) --force
REGRESS_TOLERANCE ?= 0.10
REGRESS_CHECK = $(REGRESS)/ci-run --profile $(REGRESS)/profile.json --tolerance $(REGRESS_TOLERANCE) \
	--baseline results/ci-baseline
REGRESS_FINETUNE := --task sst2 --max-train-samples 2000 --max-seq-len 64 --tilt-rate 0.2 --epochs 1 --seed 0 \
	--output $(REGRESS)/checkpoint --overwrite --json
regress: install
	$(BIN)/tiltbench finetune $(REGRESS_FINETUNE)
	$(BIN)/tiltbench sweep $(REGRESS_SWEEP) --run-name ci-run
	$(BIN)/tiltbench calibrate --max-tokens-per-batch 4096 --profile $(REGRESS)/profile.json --json \
		> $(REGRESS)/calibrate.json
	$(BIN)/tiltbench check $(REGRESS_CHECK) || { \
		echo "regress: check failed; measuring the sweep once more: a real change reproduces, a machine hiccup does not"; \
		$(BIN)/tiltbench sweep $(REGRESS_SWEEP) --run-name ci-run && $(BIN)/tiltbench check $(REGRESS_CHECK); }

# Refresh the committed baseline (after an intended change in speed or accuracy): the regress fine-tune and three
# sweeps of its checkpoint; each row of the baseline is the sweep that read its median speedup (one reading alone
# can sit a few per cent high, and every later CI run is held to it). Any failure stops it before the baseline moves.
regress-baseline: install
	$(BIN)/tiltbench finetune $(REGRESS_FINETUNE)
	for i in 1 2 3; do $(BIN)/tiltbench sweep $(REGRESS_SWEEP) --run-name baseline-$$i || exit 1; done
	$(BIN)/python benchmarks/median_baseline.py $(REGRESS)/baseline-1 $(REGRESS)/baseline-2 $(REGRESS)/baseline-3 \
		--output results/ci-baseline

clean:
	rm -rf $(VENV) build *.egg-info
