#!/usr/bin/env bash
# Build llama.cpp's own OpenAI-compatible server (`llama-server`) into $VENV/bin, for
# `model.<role>.llamacpp.engine=native` (src/somabench/backends/llamacpp.py).
# Why: llama-cpp-python's server answers one request at a time; llama-server decodes several
# requests in one batch (`--parallel` slots). The Hugging Face hub and GitHub are unreachable
# here, so the source is the llama.cpp that the llama-cpp-python sdist on PyPI vendors: the same
# llama.cpp the `[llamacpp]` extra compiles. Release, CPU only, no web UI: 4 min 46 s on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PY:-$VENV/bin/python}
# the installed llama-cpp-python's version when there is one, so both engines run one llama.cpp
VERSION=${LLAMA_CPP_PYTHON_VERSION:-$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || echo 0.3.36)}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
WORK=${LLAMA_SERVER_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/somabench/llama-server-build/$VERSION}
mkdir -p "$WORK"
if [ ! -d "$WORK/src" ]; then
  echo "llama-server: fetching the llama-cpp-python $VERSION sdist (its vendor/llama.cpp)"
  "$PY" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$WORK/sdist"
  mkdir -p "$WORK/src.tmp"
  tar xzf "$WORK"/sdist/llama_cpp_python-*.tar.gz -C "$WORK/src.tmp" --strip-components=1
  mv "$WORK/src.tmp" "$WORK/src"
fi
echo "llama-server: building with $JOBS jobs (CPU only, this machine's instruction set)"
cmake -S "$WORK/src/vendor/llama.cpp" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF >"$WORK/cmake.log" 2>&1 \
  || { tail -40 "$WORK/cmake.log"; echo "llama-server: cmake configure failed (log $WORK/cmake.log)"; exit 1; }
cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; echo "llama-server: build failed (log $WORK/build.log)"; exit 1; }
install -m 755 "$WORK/build/bin/llama-server" "$VENV/bin/llama-server"
"$VENV/bin/llama-server" --version 2>&1 | grep -m1 '^version' || true
echo "llama-server: installed $VENV/bin/llama-server (use model.F.llamacpp.engine=native)"
