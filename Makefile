# Three commands: `make demo`, `make test` and `make test-all`. Each creates .venv and
# installs everything first (only Python >= 3.10 with venv and a C compiler are assumed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pigeon-installed
PYTEST_ARGS ?=
# pytest-xdist: one worker per core, at most 8 (each imports torch). Tests sharing a
# module fixture run on one worker (their xdist_group). TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= auto
XDIST  := -n $(TEST_WORKERS) --maxprocesses=8 --dist loadgroup

.PHONY: setup demo test test-all clean

setup: $(STAMP)

# torch: an existing torch >= 2.4 (in the system Python) is reused through a
# venv with system site packages; otherwise the local CPU build 2.13.0; otherwise
# any torch >= 2.4 from PyPI.
# DGL: only dgl==2.1.0 installs beside a recent torch. Its pinned torchdata
# would replace our torch, so it and torchdata 0.7.1 go in with --no-deps; the
# import workaround lives in pigeon/interop/dgl.py.
# PyKEEN ships the Kinships/UMLS/Nations triples we load; --no-deps because we
# only read its data files and never import it.
$(STAMP): pyproject.toml Makefile
	@if [ ! -x $(BIN)/python ]; then \
	  if $(PYTHON) -c "import torch, sys; sys.exit(tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]) < (2, 4))" 2>/dev/null; then \
	    echo "using the system torch"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; \
	fi
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch==2.13.0 || $(BIN)/pip install "torch>=2.4"
	$(BIN)/pip install -e ".[triton,test]"
	$(BIN)/pip install numpy scipy networkx requests tqdm psutil
	$(BIN)/pip install --no-deps dgl==2.1.0 torchdata==0.7.1 pykeen
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pigeon demo

# Everything but the tests marked nightly (Triton's ahead-of-time compile of every kernel;
# `make test` compiles one kernel of each template).
test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not nightly" $(PYTEST_ARGS)

# The nightly job: every test.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
