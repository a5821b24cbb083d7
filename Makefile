# p3b_hf developer targets. `make install` builds .venv with the CPU torch wheel first (GPU users:
# install your CUDA torch into the venv before `pip install -e .`).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test lint demo bench gpu-kit gpu-smoke mutants clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"

install: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"

test: install
	$(BIN)/ruff check p3b_hf tests recipes scripts
	$(BIN)/ruff format --check p3b_hf tests recipes scripts
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check p3b_hf tests recipes scripts
	$(BIN)/ruff format --check p3b_hf tests recipes scripts

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m p3b_hf demo --output-dir outputs/demo

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m p3b_hf bench --random-arch deit-tiny --device cpu --batch-size 1

# GPU measurements (BENCHMARKS.md §4): prepare _device/ here, then on the device machine
# `bash scripts/gpu_session.sh speed` (or `faithfulness`); gpu-smoke runs every step tiny on the CPU.
gpu-kit: install
	PYTHON=$(BIN)/python bash scripts/gpu_kit.sh

gpu-smoke: install
	PYTHON=$(BIN)/python OUT=outputs/gpu_smoke bash scripts/gpu_session.sh smoke

# Mutation testing of the P3B algorithm and the KD loss (docs/p3b.md "Mutation testing"): mutmut copies the
# package into ./mutants/ and runs the fast unit-level P3B tests ([tool.mutmut] in pyproject.toml) against
# every mutant, one worker, niced; about 1 h on 2 shared cores. Prints the per-module table and the survivors.
mutants: install
	rm -rf mutants
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 $(BIN)/mutmut run --max-children 1
	$(BIN)/mutmut results --all true | $(BIN)/python tests/mutmut_summary.py --survivors

clean:
	rm -rf $(VENV) outputs .pytest_cache
