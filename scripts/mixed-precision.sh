#!/usr/bin/env bash
# The mixed-precision measurements of BENCHMARKS.md ("Mixed precision"): the `cpu`
# preset (2000 steps) with 3 seeds in f32, with parameters rounded to bf16 after each
# update (--emulate-bf16, no master copies) and with f32 master copies; real bf16 on
# the CPU with and without master copies; and 300 steps of f16 on the software GPU
# (wgpu:cpu, with and without master copies) beside f32.
#
#   scripts/mixed-precision.sh [QUILL_BINARY] [OUT_DIR]
#
# QUILL_BINARY defaults to target/release/quill (built with --features wgpu for the
# wgpu:cpu runs, which Mesa's lavapipe runs at ~1 s a step); OUT_DIR to
# mixed-precision/. A run that finished (its `done` file) is not run again. Prints
# each run's final val loss.
set -uo pipefail
cd "$(dirname "$0")/.."
quill=$(realpath "${1:-target/release/quill}")
out=${2:-mixed-precision}
data=${DATA:-../shared/data/tinyshakespeare.txt}
mkdir -p "$out"
lscpu > "$out/cpu.txt"

run() {   # run NAME ARGS...: quill train --preset cpu ARGS into OUT_DIR/NAME
  local name=$1; shift
  [ -f "$out/$name/done" ] && return
  rm -rf "${out:?}/$name"
  "$quill" train --preset cpu --data "$data" --out "$out/$name" "$@" > "$out/$name.log" 2>&1 \
    && touch "$out/$name/done"
}

for seed in 1337 1338 1339; do
  run "f32-$seed" --seed "$seed"
  run "bf16-alone-$seed" --seed "$seed" --emulate-bf16 true --master-weights false
  run "bf16-master-$seed" --seed "$seed" --emulate-bf16 true
done
run native-bf16-master-1337 --dtype bf16
run native-bf16-alone-1337 --dtype bf16 --master-weights false
short=(--max-iters 300 --eval-interval 100)
run f32-300 "${short[@]}"
run wgpu-f32-300 "${short[@]}" --device wgpu:cpu
run wgpu-f16-master-300 "${short[@]}" --device wgpu:cpu --dtype f16
run wgpu-f16-alone-300 "${short[@]}" --device wgpu:cpu --dtype f16 --master-weights false

for metrics in "$out"/*/metrics.jsonl; do
  printf '%-28s %s\n' "$(basename "$(dirname "$metrics")")" "$(tail -n 1 "$metrics")"
done
