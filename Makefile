# kvlab: two commands for a newcomer (`make demo`, `make test`); each builds .venv from scratch.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch (the wheel this machine kind keeps on disk); GPU machines bring their own torch.
TORCH  ?= torch==2.13.0
NATIVE := $(wildcard native/src/*.cpp native/src/*.h) native/CMakeLists.txt
STAMP  := $(VENV)/.kvlab-installed

.PHONY: demo test test-gpu bench-vmm clean

$(STAMP): pyproject.toml $(NATIVE)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

demo: $(STAMP)
	$(BIN)/kvlab doctor
	$(BIN)/kvlab bench vmm

# pytest exits 5 when it collects nothing: make treats that as the failure it is.
test: $(STAMP)
	$(BIN)/python -m pytest tests

# On the GPU machine (system Python with its own torch; see ../shared/device/README.md).
test-gpu:
	$(PYTHON) -m pip install --quiet --no-build-isolation --no-deps -e .
	$(PYTHON) -m pytest tests -m gpu -v

bench-vmm: $(STAMP)
	$(BIN)/kvlab bench vmm

clean:
	rm -rf $(VENV) build
