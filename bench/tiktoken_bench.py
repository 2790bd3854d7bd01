#!/usr/bin/env python3
"""The peer of `cargo xtask bench-tokenizer`: OpenAI's tiktoken (`gpt2` encoding) on the
same text and cores as `quill data prepare --tokenizer gpt2`.

    python bench/tiktoken_bench.py FILE THREADS

Prints one JSON object: tokens, seconds and MB/s of the faster of `encode_ordinary` on
the whole text (one thread) and `encode_ordinary_batch` on ~1 MB chunks cut at line
ends (THREADS threads), plus the peak RSS. GPT-2's files come from the tiktoken-rs crate
in the Cargo registry (offline); tiktoken checks their sha256.
"""
import glob
import json
import os
import resource
import sys
import time

import tiktoken
import tiktoken.load

path, threads = sys.argv[1], int(sys.argv[2])
assets = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/tiktoken-rs-*/assets")))[-1]


def read_local(blobpath):
    with open(os.path.join(assets, os.path.basename(blobpath)), "rb") as f:
        return f.read()


tiktoken.load.read_file = read_local
os.environ["TIKTOKEN_CACHE_DIR"] = ""
enc = tiktoken.get_encoding("gpt2")
with open(path, encoding="utf-8", newline="") as f:  # the exact text, \r\n kept
    text = f.read()
mb = len(text.encode("utf-8")) / 1e6

chunks, start = [], 0
while start < len(text):
    end = text.find("\n", start + 1_000_000)
    end = len(text) if end < 0 else end + 1
    chunks.append(text[start:end])
    start = end

t = time.perf_counter()
batch = enc.encode_ordinary_batch(chunks, num_threads=threads)
batch_s = time.perf_counter() - t
t = time.perf_counter()
single = enc.encode_ordinary(text)
single_s = time.perf_counter() - t
best = min(batch_s, single_s)
print(json.dumps({
    "tiktoken": tiktoken.__version__,
    "mb": mb,
    "tokens": len(single),
    "batch_tokens": sum(map(len, batch)),
    "single_thread_s": single_s,
    "batch_s": batch_s,
    "threads": threads,
    "mb_per_s": mb / best,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
