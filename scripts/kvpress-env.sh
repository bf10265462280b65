#!/usr/bin/env bash
# Create the kvpress venv (default .venv-kvpress): NVIDIA's kvpress (KV-cache compression
# presses for transformers: StreamingLLM, SnapKV, expected attention ...) plus somabench
# (editable) under a constraints file.
# Why a separate venv: kvpress 0.5 requires transformers<5.3, older than the main stack (the
# same situation as vLLM's CPU build, scripts/vllm-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KVPRESS_VENV:-.venv-kvpress}
PY=${PY:-python3}
KVPRESS_SPEC=${KVPRESS_SPEC:-kvpress==0.5.5}
TORCH_CPU_SPEC=${TORCH_CPU_SPEC:-torch==2.13.0}
TRANSFORMERS_SPEC=${TRANSFORMERS_SPEC:-transformers>=5.0,<5.3}
PANDAS_SPEC=${PANDAS_SPEC:-pandas<3}

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q)
"$VENV/bin/python" -m pip install -q --upgrade pip
cons="$VENV/constraints.txt"
printf '%s\n%s\n%s\n' "$TRANSFORMERS_SPEC" "$PANDAS_SPEC" "$KVPRESS_SPEC" >"$cons"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "kvpress-env: GPU found -> $KVPRESS_SPEC (CUDA torch comes with it)"
else
  echo "kvpress-env: no GPU -> $TORCH_CPU_SPEC first (else pip pulls CUDA torch)"
  "${pip[@]}" "$TORCH_CPU_SPEC"
  printf '%s\n' "$TORCH_CPU_SPEC" >>"$cons"
fi
"${pip[@]}" -c "$cons" "$KVPRESS_SPEC"
# somabench and its test deps, held to the versions kvpress accepts.
"${pip[@]}" -c "$cons" -e ".[dev]"
"$VENV/bin/python" -c "import kvpress, somabench, transformers, torch; from importlib.metadata import version; print('kvpress-env ok: kvpress', version('kvpress'), 'transformers', transformers.__version__, 'torch', torch.__version__)"
touch "$VENV/.installed"
