#!/usr/bin/env bash
# A newcomer's sweep of bad inputs: every case must end in one `error: …` line (or
# succeed), never a panic, an abort or a backtrace; kill -9 at random moments must leave
# loadable checkpoints and, once the next run has opened the directory, no temporary
# entries. Prints one line per case and a closing count.
#
#   scripts/sweep.sh [QUILL_BINARY] [CORPUS]
set -uo pipefail
quill=$(realpath "${1:-target/release/quill}")
corpus=$(realpath "${2:-data/tinyshakespeare/input.txt}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
unset RUST_BACKTRACE
tiny=(--n-layer 1 --n-head 2 --n-embd 16 --block-size 16 --batch-size 4 --eval-interval 5
  --eval-iters 1 --final-eval-iters 1 --sample-tokens 0 --data "$corpus")
passed=0
failed=0

# Runs quill with the case's arguments; the case passes when the exit status is 0, or
# non-zero with `error: ` on the last stderr line and no panic or abort.
check() {
  local name=$1
  shift
  "$quill" "$@" >out.txt 2>err.txt
  local rc=$?
  local last
  last=$(tail -n 1 err.txt)
  if [ $rc -ne 0 ] && { [ $rc -gt 128 ] || ! [[ $last == error:* ]] ||
    grep -qE 'panicked|stack backtrace|memory allocation' err.txt; }; then
    echo "FAIL $name (exit $rc): $last"
    failed=$((failed + 1))
  else
    echo "ok   $name (exit $rc)${last:+: $last}"
    passed=$((passed + 1))
  fi
}

"$quill" train "${tiny[@]}" --out base --max-iters 5 >/dev/null 2>&1

# Flags and settings.
check "unknown flag" train --nope
check "unknown preset" train --preset gpt5 --data "$corpus"
check "n_head does not divide" train --n-head 3 --data "$corpus"
check "zero batch" train --batch-size 0 --data "$corpus"
check "negative lr" train --lr=-1 --data "$corpus"
check "lr not a number" train --lr fast --data "$corpus"
check "block larger than data" train --block-size 200000 --n-layer 1 --n-embd 16 --n-head 2 --data "$corpus"
check "block 100000 (terabytes)" train --block-size 100000 --data "$corpus"
check "n_embd 1000000" train --n-embd 1000000 --n-head 1 --data "$corpus"
check "batch 1000000" train --batch-size 1000000 --data "$corpus"
check "n_layer 10000" train --n-layer 10000 --data "$corpus"
check "dropout 1" train --dropout 1 --data "$corpus"
check "missing corpus" train --data nowhere.txt
check "unknown device" train --device tpu --data "$corpus"
check "cuda not present" train --device cuda:7 --data "$corpus"
check "bf16 on cpu" train --device cpu --dtype bf16 --data "$corpus"
printf 'ok\xff' >binary.txt
check "binary corpus" data --data binary.txt
# Config files.
echo 'n_layers = 2' >typo.toml
check "config key typo" train --config typo.toml --data "$corpus"
echo 'max_iters = "ten"' >type.toml
check "config wrong type" train --config type.toml --data "$corpus"
echo '[[[' >broken.toml
check "config not TOML" train --config broken.toml --data "$corpus"
check "config missing" train --config missing.toml --data "$corpus"
# Sampling.
check "sample missing checkpoint" sample --checkpoint nowhere
check "sample negative temperature" sample --checkpoint base/last --temperature=-1
check "sample top-p 2" sample --checkpoint base/last --top-p 2
check "sample unknown character" sample --checkpoint base/last --prompt "€"
check "sample 10^9 samples" sample --checkpoint base/last --num-samples 1000000000
# No Vulkan driver.
export VK_ICD_FILENAMES=/nonexistent.json VK_DRIVER_FILES=/nonexistent.json
check "no vulkan: devices" devices
check "no vulkan: train" train --device wgpu "${tiny[@]}"
check "no vulkan: eval" eval --device wgpu:cpu --checkpoint base/last --data "$corpus"
unset VK_ICD_FILENAMES VK_DRIVER_FILES
CUBECL_WGPU_DEFAULT_DEVICE="DiscreteGpu(99)" \
  check "cubecl panic at device start" eval --device wgpu --checkpoint base/last --data "$corpus"
# Corrupted checkpoints: each file truncated, emptied, replaced by garbage, removed.
for file in model.safetensors optimizer.safetensors config.json vocab.json state.json; do
  for damage in truncate empty garbage remove; do
    rm -rf bad && cp -r base/last bad
    case $damage in
    truncate) head -c 40 "base/last/$file" >"bad/$file" ;;
    empty) : >"bad/$file" ;;
    garbage) head -c 300 /dev/urandom >"bad/$file" ;;
    remove) rm "bad/$file" ;;
    esac
    check "checkpoint $file $damage: eval" eval --checkpoint bad --data "$corpus" --eval-iters 1
    check "checkpoint $file $damage: resume" train --resume bad --out bad-run --data "$corpus"
  done
done

# kill -9 at random moments of a run that checkpoints every 5 steps, then resume.
kills=0
for trial in $(seq 1 "${KILL_TRIALS:-12}"); do
  rm -rf killed
  "$quill" train "${tiny[@]}" --out killed --max-iters 400 >/dev/null 2>&1 &
  pid=$!
  sleep "0.$((RANDOM % 9 + 1))"
  sleep $((RANDOM % 3))
  kill -9 $pid 2>/dev/null && kills=$((kills + 1))
  wait $pid 2>/dev/null
  if [ -d killed/last ]; then
    check "kill -9 trial $trial: resume" train --resume killed/last --data "$corpus" --max-iters 10
    leftovers=$(find killed -maxdepth 1 -name '.*' ! -name '.lock' ! -name killed | wc -l)
    if [ "$leftovers" -ne 0 ]; then
      echo "FAIL kill -9 trial $trial: $leftovers temporary entries left"
      failed=$((failed + 1))
    fi
  else
    echo "ok   kill -9 trial $trial: killed before the first checkpoint"
    passed=$((passed + 1))
  fi
done
# Two trainers on one directory.
"$quill" train "${tiny[@]}" --out twice --max-iters 100000 >/dev/null 2>&1 &
pid=$!
sleep 2
check "second trainer on one directory" train "${tiny[@]}" --out twice --max-iters 10
kill -9 $pid
wait $pid 2>/dev/null

echo "sweep: $passed passed, $failed failed ($kills processes killed with -9)"
[ "$failed" -eq 0 ]
