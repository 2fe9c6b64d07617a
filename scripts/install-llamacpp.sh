#!/usr/bin/env bash
# Add the optional llama.cpp engine (--engine llama.cpp) to an installed venv: llama-cpp-python,
# compiled here. `make test` runs this so the engine's tests run; `make demo` does not need it.
#
# CPU flags: llama.cpp's own tuning to the build machine (GGML_NATIVE, its default) crashed here on
# a machine of the same type, so the flags are named one by one from what this CPU reports: AVX2 on
# every x86-64, and AVX-512 with VNNI, VBMI and BF16 where /proc/cpuinfo lists all of them (their
# batched bf16 products are 2-3x AVX2's here); never AMX. The wheel is built once per flag set into
# gptcli's cache and installed from there: pip's own wheel cache does not tell builds with other
# flags apart, and a wheel with AVX-512 would crash a machine without it. CMAKE_ARGS, when set,
# replaces the flags.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
VERSION=$(sed -n 's/^llama_cpp_python==//p' constraints.txt)
DISKCACHE=$(sed -n 's/^diskcache==//p' constraints.txt)  # its one dependency the rest of gptcli lacks

cpu_flags() {
  if [ "$(uname -m)" != "x86_64" ]; then
    echo "-DGGML_NATIVE=OFF"
    return
  fi
  local flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  local have
  have=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  local wanted=(avx512f avx512bw avx512vl avx512dq avx512_vnni avx512vbmi avx512_bf16)
  local all=1
  for flag in "${wanted[@]}"; do
    [[ " $have " == *" $flag "* ]] || all=0
  done
  if [ "$all" = 1 ]; then
    flags="$flags -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON"
  else
    flags="$flags -DGGML_AVX512=OFF"
  fi
  echo "$flags -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF"
}

FLAGS=${CMAKE_ARGS:-$(cpu_flags)}
STAMP="$VENV/.gptcli-llamacpp-flags"
if "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$VERSION')" 2>/dev/null \
   && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FLAGS" ]; then
  exit 0
fi
KEY=$(printf '%s %s' "$VERSION" "$FLAGS" | sha256sum | cut -c1-16)
WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/gptcli/llamacpp-wheels/$KEY"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
if ! ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "install-llamacpp.sh: building llama-cpp-python $VERSION with $FLAGS (a few minutes, once)" >&2
  mkdir -p "$WHEELS.partial"
  CMAKE_ARGS="$FLAGS" pip wheel --no-deps --no-cache-dir -w "$WHEELS.partial" "llama-cpp-python==$VERSION"
  rm -rf "$WHEELS" && mv "$WHEELS.partial" "$WHEELS"
fi
pip install --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl
pip install "diskcache==$DISKCACHE"
echo "$FLAGS" > "$STAMP"
