# `make demo` and `make test` each create the virtual environment on first use: torch first (the CPU wheel, so pip does
# not pull CUDA builds), then this package with its test extras. On a GPU machine, `make install EXTRAS=test,gpu` takes
# the CUDA build of torch 2.13.0 that pip picks for the platform and adds torchvision (real Qwen3.5 processors); torch
# stays at 2.13, the version the `vllm` extra (vLLM 0.30.0) pins.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= test
BIN := $(VENV)/bin
# CPU torch on small VMs slows down 10-100x at random with more than one OpenMP thread.
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test quality bench reproduce clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/accelerate launch --config_file configs/accelerate/cpu.yaml scripts/vzero.py --config configs/demo.yaml

test: install
	$(BIN)/python -m pytest -q

quality: install
	$(BIN)/ruff check vzero_trl tests scripts benchmarks
	$(BIN)/ruff format --check vzero_trl tests scripts benchmarks

# The paper's Table 2 in miniature (vzero_trl.mini): the letter and prior worlds, pair seeds 0-1, V-Zero / plain OPD /
# w_min = 1; about 25 minutes on 2 CPU cores (`scripts/reproduce_mini.py --full` is the committed grid). Writes
# outputs/mini/results.md, results.json and the pictures; a rerun reuses finished runs.
reproduce: install
	$(BIN)/python scripts/reproduce_mini.py --output_dir outputs/mini

# Speed and memory benchmarks (not part of the tests): writes benchmarks/RESULTS.md, about 15 minutes on 2 CPU cores.
bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
