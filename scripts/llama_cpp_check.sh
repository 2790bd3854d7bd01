#!/usr/bin/env bash
# llama.cpp runs quill's Hugging Face export: greedy text from both sides, compared.
#
#   pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
#   tar xzf llama_cpp_python-0.3.36.tar.gz
#   L=llama_cpp_python-0.3.36/vendor/llama.cpp
#   cmake -S $L -B $L/build -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release
#   cmake --build $L/build -j --target llama-completion
#   python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 transformers==4.57.1 \
#       numpy==2.4.6 safetensors==0.8.0 sentencepiece==0.2.1 $L/gguf-py
#   scripts/llama_cpp_check.sh target/release/quill runs/NAME/last $L /tmp/hf/bin/python
#
# CHECKPOINT: a GPT on GPT-2 tokens (llama.cpp's converter recognises GPT-2's
# tokenizer). llama.cpp computes GPT-2's tanh GELU whatever config.json says, so a
# model trained with the exact GELU (quill's default) differs from quill and
# transformers by ~1e-3 in its logits there; train with --activation gelu-tanh for
# identical text. The KV cache is kept in f32 (-ctk/-ctv), greedy (--temp 0).
set -euo pipefail
quill=$1 checkpoint=$2 llama=$3 python=${4:-python3}
prompt=${PROMPT:-ROMEO:} tokens=${TOKENS:-100}
work=$(mktemp -d)
"$quill" export --format hf --checkpoint "$checkpoint" --out "$work/hf" >/dev/null
"$quill" sample --checkpoint "$checkpoint" --prompt "$prompt" --temperature 0 \
    --max-new-tokens "$tokens" 2>/dev/null >"$work/quill.txt"
for type in f32 f16; do
    "$python" "$llama/convert_hf_to_gguf.py" "$work/hf" --outtype $type \
        --outfile "$work/model-$type.gguf" >"$work/convert-$type.log" 2>&1
    "$llama/build/bin/llama-completion" -m "$work/model-$type.gguf" -p "$prompt" \
        -n "$tokens" --temp 0 -ctk f32 -ctv f32 -no-cnv --no-warmup 2>/dev/null \
        >"$work/llama-$type.txt"
    # quill ends its text with one newline, llama-completion with two.
    if [ "$(cat "$work/quill.txt")" == "$(cat "$work/llama-$type.txt")" ]; then
        echo "$type: identical greedy text ($tokens tokens)"
    else
        echo "$type: the greedy texts differ:"
        diff <(cat "$work/quill.txt") <(cat "$work/llama-$type.txt") || true
    fi
done
echo "--- quill:"
cat "$work/quill.txt"
echo "--- llama.cpp (f32):"
cat "$work/llama-f32.txt"
