#!/usr/bin/env bash
# GPU check: run a quill binary built elsewhere on a GPU machine (driver + CUDA toolkit,
# no cargo, no network) and write JSON results.
#
#   scripts/gpu-check.sh [QUILL_BINARY] [OUT_DIR]
#
# QUILL_BINARY defaults to .gpu/quill (build it on a machine with cargo:
#   cargo build --release -p quill-cli --features cuda,wgpu && mkdir -p .gpu && cp target/release/quill .gpu/
# ), OUT_DIR to $OUT or gpu-results/. The corpus must be at data/tinyshakespeare/input.txt.
#
# Steps (each bounded by a timeout; one failing does not stop the others):
#   devices.json          quill devices
#   parity-f32.json       quill parity --device cuda (initial loss within 1e-4, 20 steps within 1e-3)
#   parity-bf16.json      the same in bf16 over 100 steps, within 0.05 of the f32 CPU losses
#   bench-cold.json       quill bench --preset shakespeare-char, empty kernel/autotune cache
#   bench-warm.json       the same again, with the cache the cold run left
#   train-*/              quill train --preset cpu (2000 steps) in f32, in bf16 with f32
#                         master weights, and in bf16 alone (--master-weights false):
#                         compare the val losses in their metrics.jsonl
#   summary.txt           one line per step: ok/failed, seconds
set -uo pipefail
cd "$(dirname "$0")/.."

quill=$(realpath "${1:-.gpu/quill}")
out=${2:-${OUT:-gpu-results}}
mkdir -p "$out"
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}     # NVRTC includes cuda_runtime.h from here
export QUILL_CACHE_DIR=${QUILL_CACHE_DIR:-$(mktemp -d)/cubecl}
data=data/tinyshakespeare/input.txt
limit=${STEP_TIMEOUT:-240}

step() {   # step NAME COMMAND...: stdout to NAME.json, stderr to NAME.log
  local name=$1; shift
  local start=$(date +%s%N)
  timeout "$limit" "$@" > "$out/$name.json" 2> "$out/$name.log"
  local rc=$?
  local ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%-12s rc=%-3s %5d.%03d s  %s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) "$*" | tee -a "$out/summary.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
step devices     "$quill" devices --json
step parity-f32  "$quill" parity --device cuda --data "$data" --json
step parity-bf16 "$quill" parity --device cuda --dtype bf16 --steps 100 \
                 --initial-tolerance 0.05 --step-tolerance 0.05 --data "$data" --json
rm -rf "$QUILL_CACHE_DIR"
step bench-cold  "$quill" bench --preset shakespeare-char --device cuda --iters 20 --data "$data" --json
step bench-warm  "$quill" bench --preset shakespeare-char --device cuda --iters 20 --data "$data" --json
du -sh "$QUILL_CACHE_DIR" >> "$out/summary.txt" 2>&1
for run in f32:f32 bf16-master:bf16 bf16-alone:bf16; do
  name=train-${run%%:*}
  extra=(); [ "$name" = train-bf16-alone ] && extra=(--master-weights false)
  step "$name" "$quill" train --preset cpu --device cuda --dtype "${run##*:}" "${extra[@]}" \
       --data "$data" --out "$out/$name"
  tail -n 1 "$out/$name/metrics.jsonl" >> "$out/summary.txt" 2>&1
done
cat "$out/summary.txt"
