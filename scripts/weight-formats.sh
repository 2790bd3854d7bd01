#!/usr/bin/env bash
# What --weights bf16|f16|q8 costs in quality: each format's val loss beside f32's, and
# how far its greedy text (200 tokens) agrees with f32's, on
#   1. a character model trained on tiny Shakespeare (`--preset cpu`, 2000 steps), and
#   2. the GPT-2-124M-shaped model of `cargo xtask bench-gpt2` (random weights:
#      target/gpt2-bench/ck124; run that first), evaluated on tiny Shakespeare in GPT-2
#      tokens.
#
#   scripts/weight-formats.sh [CORPUS]     (default ../shared/data/tinyshakespeare.txt)
#
# Writes its work under target/weight-formats/ and prints one Markdown table.
set -euo pipefail
corpus=${1:-../shared/data/tinyshakespeare.txt}
quill=target/release/quill
work=target/weight-formats
mkdir -p "$work"
cargo build --release -p quill-cli >/dev/null 2>&1

if [ ! -f "$work/cpu/last/state.json" ]; then
    "$quill" train --preset cpu --data "$corpus" --out "$work/cpu" >"$work/cpu.log" 2>&1
fi
if [ ! -f "$work/gpt2-data/meta.json" ]; then
    "$quill" data prepare --data "$corpus" --tokenizer gpt2 --out "$work/gpt2-data" >/dev/null 2>&1
fi

# checkpoint, data, prompt, eval batches, file name, label: one row per format.
measure() {
    local ck=$1 data=$2 prompt=$3 iters=$4 name=$5 label=$6
    "$quill" sample --checkpoint "$ck" --prompt "$prompt" --temperature 0 \
        --max-new-tokens 200 2>/dev/null >"$work/$name-f32.txt"
    local f32_loss
    for w in f32 bf16 f16 q8; do
        loss=$("$quill" eval --checkpoint "$ck" --data "$data" --eval-iters "$iters" \
            --weights "$w" --json 2>/dev/null | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["val_loss"])')
        [ "$w" = f32 ] && f32_loss=$loss
        "$quill" sample --checkpoint "$ck" --prompt "$prompt" --temperature 0 \
            --max-new-tokens 200 --weights "$w" 2>/dev/null >"$work/$name-$w.txt"
        agree=$(python3 - "$work/$name-f32.txt" "$work/$name-$w.txt" <<'EOF'
import sys
a, b = (open(p, encoding="utf-8").read() for p in sys.argv[1:3])
same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print("identical" if a == b else f"first difference at character {same} of {len(a)}")
EOF
)
        delta=$(python3 -c "print('%+.4f' % ($loss - $f32_loss))")
        echo "| $label | $w | $loss | $delta | $agree |"
    done
}

echo "| model | weights | val loss | − f32 | greedy text (200 tokens) vs f32 |"
echo "|---|---|---|---|---|"
measure "$work/cpu/last" "$corpus" "ROMEO:" 200 cpu "cpu preset (characters, trained)"
measure target/gpt2-bench/ck124 "$work/gpt2-data" "ROMEO:" 2 gpt2 "GPT-2 124M shapes (random weights)"

# Sampling speed of the character model in each format, against its bound.
echo
echo "| model | weights | tokens/s (1000 tokens) | weights (MB) | read bandwidth (GB/s) | bound (tokens/s) | of the bound |"
echo "|---|---|---|---|---|---|---|"
for w in f32 bf16 f16 q8; do
    "$quill" bench --checkpoint "$work/cpu/last" --sample-tokens 1000 --weights "$w" --json 2>/dev/null |
        python3 -c 'import json,sys; r=json.loads(sys.stdin.read().splitlines()[-1]); print("| cpu preset | %s | %.1f | %.2f | %.2f | %.1f | %.0f%% |" % (r["weights"], r["sample_tokens_per_s"], r["weight_bytes"]/1e6, r["read_bandwidth_gb_s"], r["bound_tokens_per_s"], 100*r["fraction_of_bound"]))'
done
