#!/usr/bin/env python3
"""The transformers comparator of `cargo xtask bench-gpt2`: a GPT-2-124M-shaped model
with random weights (no download), and the speed of `generate(use_cache=True)` on it.

    python3 bench/gpt2_generate.py make DIR
        GPT2LMHeadModel(GPT2Config()) (124M shapes: 12 layers, 12 heads, 768 wide,
        1024 positions, 50,257 tokens, gelu_new) from torch's seed 0, saved to DIR in
        float32 (config.json + model.safetensors), for `quill import gpt2 --from DIR`.
    python3 bench/gpt2_generate.py bench DIR TOKENS THREADS
        Samples TOKENS new tokens (temperature 1, no top-k) after token 0 with the KV
        cache on THREADS threads, after an untimed 8-token warm-up; prints one line of
        JSON: tokens/s and the process's peak RSS.

Versions used for BENCHMARKS.md: torch 2.15.0, transformers 4.57.1 (scripts/gpt2_fixture.py
says how to install them).
"""
import json
import resource
import sys
import time

import torch
import transformers


def make(directory):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    model.save_pretrained(directory, safe_serialization=True)


def bench(directory, tokens, threads):
    torch.set_num_threads(threads)
    model = transformers.GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32).eval()
    x = torch.tensor([[0]])

    def run(n):
        torch.manual_seed(1337)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                use_cache=True,
                pad_token_id=50256,
            )
        assert out.shape[1] == 1 + n, out.shape
        return time.perf_counter() - start

    run(8)
    seconds = run(tokens)
    print(json.dumps({
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": threads,
        "new_tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        bench(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
