#!/usr/bin/env bash
# Behaviour must not change in a refactor: every preset (and 16-bit training, real and
# emulated) trains 4 small steps on the CPU with two quill binaries, and the step
# losses, the saved weights and the optimizer state must be the same bit for bit.
#
#   scripts/same-losses.sh OLD_QUILL NEW_QUILL
#
# Tiny Shakespeare comes from $QUILL_CORPUS or data/tinyshakespeare/input.txt.
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2")
corpus=$(realpath "${QUILL_CORPUS:-data/tinyshakespeare/input.txt}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
small=(--max-iters 4 --eval-interval 2 --eval-iters 1 --final-eval-iters 1 --batch-size 2
  --sample-tokens 20 --device cpu)
wsd=(--warmup-iters 1 --cooldown-iters 2)
runs=(
  "bigram|--preset bigram" "lecture|--preset lecture" "shakespeare-char|--preset shakespeare-char"
  "cpu|--preset cpu" "shakespeare-gpt2|--preset shakespeare-gpt2"
  "cpu-fast|--preset cpu-fast ${wsd[*]}" "shakespeare-char-fast|--preset shakespeare-char-fast ${wsd[*]}"
  "bf16|--preset cpu-fast --dtype bf16 ${wsd[*]}" "emulate-bf16|--preset cpu-fast --emulate-bf16 true ${wsd[*]}"
)
for side in old new; do
  mkdir -p "$work/$side/data/tinyshakespeare"
  cp "$corpus" "$work/$side/data/tinyshakespeare/input.txt"
done
status=0
for run in "${runs[@]}"; do
  name=${run%%|*} args=${run#*|}
  for side in old new; do
    binary=$old
    [ "$side" = new ] && binary=$new
    # shellcheck disable=SC2086 # the run's flags split on spaces
    (cd "$work/$side" && "$binary" train $args "${small[@]}" --out "run-$name" >"log-$name.txt" 2>&1) ||
      { echo "$name: $side failed: $(tail -n 1 "$work/$side/log-$name.txt")"; status=1; continue 2; }
  done
  losses() { python3 -c 'import json,sys; print([json.loads(l)["loss"] for l in open(sys.argv[1])])' "$1"; }
  a=$(losses "$work/old/run-$name/steps.jsonl") b=$(losses "$work/new/run-$name/steps.jsonl")
  same=yes
  [ "$a" = "$b" ] || same=no
  for file in model.safetensors optimizer.safetensors; do
    cmp -s "$work/old/run-$name/last/$file" "$work/new/run-$name/last/$file" || same=no
  done
  echo "$name: same=$same losses $b"
  [ $same = yes ] || status=1
done
exit $status
