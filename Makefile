# fastmed — the two commands: `make demo` and `make test` (each sets everything up first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# the PyTorch build on this project's machines (a CUDA build that also runs on the CPU)
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: setup native-deps native demo test test-all bench gpu-check clean

setup: $(VENV)/.installed native-deps

# the C++ runner's build tools and image libraries (Debian/Ubuntu packages); a no-op when all are installed,
# installed with apt-get when missing (as root, or through sudo), else a note: its tests then skip or fail
NATIVE_DEBS := cmake g++ libpng-dev libjpeg-dev
native-deps:
	@command -v dpkg >/dev/null || { echo "note: no dpkg; the C++ runner (make native) needs: $(NATIVE_DEBS)"; exit 0; }; \
	missing=$$(for p in $(NATIVE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo="sudo -n"; \
	else echo "note: the C++ runner needs:" $$missing "(apt-get install them as root)"; exit 0; fi; \
	{ $$sudo apt-get update -q && $$sudo apt-get install -y -q --no-install-recommends $$missing; } \
	  || echo "note: could not install" $$missing "for the C++ runner"

# cmake/: libfastmed_native and fastmed-run, against the venv's torch (README, export: the C++ runner)
NATIVE_BUILD ?= build/native
native: setup
	cmake -S cmake -B $(NATIVE_BUILD) -DPython3_EXECUTABLE=$(abspath $(BIN)/python) $(if $(shell command -v ninja),-G Ninja)
	cmake --build $(NATIVE_BUILD) -j 2

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

# the kernel benchmarks with the settings of the README's rows (Sinkhorn and grad-dot on one thread: CPU-time ratios;
# grad-dot twice: glibc defaults, then freed memory kept in the process, i.e. no page faults for fresh temporaries;
# bench_export.py needs checkpoints: see the README's export section)
KERNEL_BENCH := "OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_sinkhorn.py --threads 1" \
	"$(BIN)/python benchmarks/bench_mil_pool.py" \
	"OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_grad_dot.py --threads 1 --layers" \
	"MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_grad_dot.py --threads 1 --out benchmarks/results/grad_dot_reused_memory" \
	"$(BIN)/python benchmarks/bench_edt.py"

bench: setup
	for b in $(KERNEL_BENCH); do sh -c "$$b" || exit 1; done

# on a CUDA machine, with the torch and Triton already there (pip install --no-deps -e .): gpu tests, every Triton
# kernel vs its reference, the kernel benchmarks vs their anchors, DDP over NCCL with 2+ GPUs; < 8 min
# (benchmarks/gpu_check.py; results in benchmarks/results/gpu_*)
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	FASTMED_PROGRESS=0 $(GPU_PYTHON) benchmarks/gpu_check.py

clean:
	rm -rf build dist *.egg-info runs .pytest_cache
