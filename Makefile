# fastmed — the two commands: `make demo` and `make test` (each sets everything up first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# the PyTorch build on this project's machines (a CUDA build that also runs on the CPU)
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-all bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/fastmed demo

test: setup
	FASTMED_PROGRESS=0 $(BIN)/python -m pytest -q

# test-all adds the slow tests: every evidence script in benchmarks/ in --quick mode (tests/test_evidence_scripts.py;
# about a minute each, results in temporary folders)
test-all: setup
	FASTMED_PROGRESS=0 $(BIN)/python -m pytest -q -m "not gpu and not tensorrt"

# the kernel benchmarks (bench_export.py needs checkpoints: see the README's export section)
KERNEL_BENCH := benchmarks/bench_sinkhorn.py benchmarks/bench_mil_pool.py benchmarks/bench_grad_dot.py benchmarks/bench_edt.py

bench: setup
	for b in $(KERNEL_BENCH); do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build dist *.egg-info runs .pytest_cache
