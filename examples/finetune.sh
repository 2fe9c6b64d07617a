#!/usr/bin/env bash
# Teach the default model (SmolLM2-135M) a few facts about a fictional company, on CPU,
# then ask it before and after. About 2-5 minutes on a laptop.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/brightleaf}

# 1. See the examples as the model will: loss is taken only on the [[marked]] tokens.
gptcli finetune --data examples/chat.jsonl --inspect | head -20

# 2. Train a LoRA adapter (the output also holds it merged into a full model).
rm -rf "$OUT"
gptcli finetune --data examples/chat.jsonl --output "$OUT" --max-steps 40 --batch-size 4 \
    --learning-rate 1e-3 --lora-r 16 --lora-alpha 32 --eval-every 10

# 3. Before and after.
gptcli generate "Where is Brightleaf based?"
gptcli generate --model "$OUT" "Where is Brightleaf based?"
gptcli generate --model smollm2 --adapter "$OUT/adapter" "Where is Brightleaf based?"
echo "loss plot: $OUT/loss.png   model card: $OUT/README.md"
