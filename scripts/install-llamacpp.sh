#!/usr/bin/env bash
# Add the optional llama.cpp engine (--engine llama.cpp) to an installed venv: llama-cpp-python,
# compiled here. `make test` runs this so the engine's tests run; `make demo` does not need it.
#
# Portable flags: a build tuned to the build machine (GGML_NATIVE, llama.cpp's default) crashed
# here on a machine of the same type, so x86_64 builds for AVX2 only, without AVX-512 or AMX.
# CMAKE_ARGS, when set, replaces these. pip keeps the built wheel in its cache: a second install
# on the same machine takes seconds, the first about four minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
VERSION=$(sed -n 's/^llama_cpp_python==//p' constraints.txt)
DISKCACHE=$(sed -n 's/^diskcache==//p' constraints.txt)  # its one dependency the rest of gptcli lacks
if [ "$(uname -m)" = "x86_64" ]; then
  DEFAULT_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF"
else
  DEFAULT_FLAGS="-DGGML_NATIVE=OFF"
fi
if "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$VERSION')" 2>/dev/null; then
  exit 0
fi
echo "install-llamacpp.sh: building llama-cpp-python $VERSION (a few minutes the first time)" >&2
CMAKE_ARGS=${CMAKE_ARGS:-$DEFAULT_FLAGS} "$VENV/bin/python" -m pip --disable-pip-version-check -q install \
    "llama-cpp-python==$VERSION" "diskcache==$DISKCACHE"
