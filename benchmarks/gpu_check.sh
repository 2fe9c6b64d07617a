#!/usr/bin/env bash
# The CUDA paths that CI (CPU only) cannot run, checked by hand on a GPU machine:
#   1. the whole test suite with device "auto" resolving to CUDA (tiny models, bf16 where supported);
#   2. finetune on a tiny Llama: LoRA with bf16 mixed precision, full, and QLoRA (--load-in-4bit),
#      each output then loaded by `gptcli generate` on the GPU.
# The default model's tests are left out: its package (a 90 MB GGUF) is not on such a machine.
#
#   OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh       (GPU_CHECK_TESTS=0 skips the test suite)
# Writes pytest.log, finetune.log and versions.txt under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
work=$(mktemp -d)
export HF_HUB_OFFLINE=1 GPTCLI_CACHE="$work/cache" HF_HOME="$work/hf" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

$PY - >"$OUT/versions.txt" 2>&1 <<'EOF'
import importlib, torch
for name in ["torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "typer"]:
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:  # report, do not stop: the rest may still run
        print(name, "missing:", error)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
EOF
cat "$OUT/versions.txt"

if [ "${GPU_CHECK_TESTS:-1}" = 1 ]; then  # GPU_CHECK_TESTS=0: the finetune paths only
echo "== tests on CUDA" >&2
$PY -m pytest -q -p no:cacheprovider --ignore=tests/test_default_model.py \
    --ignore=tests/tasks/test_summarize_real.py -k "not default_model" tests >"$OUT/pytest.log" 2>&1
echo "pytest exit $?" | tee -a "$OUT/pytest.log"
tail -25 "$OUT/pytest.log"
fi

echo "== finetune on CUDA" >&2
{
$PY - "$work" <<'EOF'
import json, random, sys
from pathlib import Path
from tests.tiny_models import build_llama
work = Path(sys.argv[1])
build_llama(work / "base")
rng = random.Random(0)
rows = []
for _ in range(64):
    word = rng.choice("cat dog sun moon tree river city house".split())
    rows.append({"messages": [{"role": "user", "content": f"what is the {word}?"},
                              {"role": "assistant", "content": f"the {word} is big and red."}]})
(work / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
EOF
common=(--data "$work/chat.jsonl" --model "$work/base" --max-steps 30 --eval-every 10 --learning-rate 3e-3)
run() { echo "\$ gptcli $*"; $PY -m gptcli "$@"; echo "exit $?"; }
run finetune "${common[@]}" --output "$work/lora" --mixed-precision bf16
run generate --model "$work/lora" --device cuda --temperature 0 --max-new-tokens 12 --stats "what is the cat?"
run generate --model "$work/base" --adapter "$work/lora/adapter" --device cuda --dtype bfloat16 --temperature 0 \
    --max-new-tokens 12 "what is the cat?"
run finetune "${common[@]}" --output "$work/full" --method full --learning-rate 1e-3
run generate --model "$work/full" --device cuda --temperature 0 --max-new-tokens 12 "what is the dog?"
run finetune "${common[@]}" --output "$work/qlora" --load-in-4bit
run generate --model "$work/qlora" --device cuda --temperature 0 --max-new-tokens 12 "what is the sun?"
echo "\$ accelerate launch -m gptcli finetune (one GPU, bf16)"
$PY -m accelerate.commands.launch --num_processes 1 --mixed_precision bf16 -m gptcli finetune "${common[@]}" \
    --output "$work/accel"; echo "exit $?"
run generate --model "$work/accel" --device cuda --temperature 0 --max-new-tokens 12 "what is the moon?"
for d in lora full qlora accel; do echo "== $d card"; grep -iE "step|loss|precision|4-bit|quant" "$work/$d/README.md" | head -12; done
} >"$OUT/finetune.log" 2>&1
cat "$OUT/finetune.log" | tail -60
rm -rf "$work"
