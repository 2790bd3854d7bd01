#!/usr/bin/env python3
"""The tiny random GPT-2 fixture of quill's Hugging Face import/export tests.

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 \
        transformers==4.57.1 safetensors==0.8.0 numpy==2.4.6 tiktoken==0.14.0
    /tmp/hf/bin/python scripts/gpt2_fixture.py make \
        ~/.cargo/registry/src/index.crates.io-*/tiktoken-rs-0.12.1/assets
    /tmp/hf/bin/python scripts/gpt2_fixture.py check-export DIR

`make` writes crates/quill-train/tests/fixtures/tiny-gpt2/:
- config.json, model.safetensors: `transformers.GPT2LMHeadModel` with GPT-2's full
  50,257-token vocabulary, 2 layers, 2 heads, 32 wide, 64 positions, `gelu_new`, drawn
  from torch's seed 0 with `initializer_range` 0.1 (wider logits than GPT-2's 0.02, so
  that greedy choices are not near-ties), saved by `save_pretrained` in float16 (half
  the size; quill and the expectations below both compute in float32 from the same
  float16 values);
- expected.json: for each prompt, its text and the ids tiktoken 0.14.0's `gpt2` gives
  it (offline, as scripts/gpt2_vectors.py does); per position the logsumexp of the
  logits, the argmax and the logits of 64 fixed token ids; and the 20-token greedy
  continuation of `generate(do_sample=False, use_cache=True)`. All in float32 on the CPU.

`check-export DIR` loads a model that `quill export --format hf` wrote with
`GPT2LMHeadModel.from_pretrained` and compares its logits with expected.json
(within 1e-4), the proof that transformers reads quill's export.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "crates", "quill-train", "tests", "fixtures", "tiny-gpt2")
PROMPTS = [
    "Hello, my name is",
    "ROMEO:\nBut soft, what light through yonder window breaks?",
    " the",
]
PROBE_IDS = [int(i) for i in np.random.default_rng(0).choice(50257, 64, replace=False)]
NEW_TOKENS = 20
TOLERANCE = 1e-4

assert torch.__version__.startswith("2.15.0"), torch.__version__
assert transformers.__version__ == "4.57.1", transformers.__version__
torch.set_num_threads(2)


def gpt2_ids(assets):
    import tiktoken
    import tiktoken.load

    assert tiktoken.__version__ == "0.14.0", tiktoken.__version__

    def read_local(blobpath):
        with open(os.path.join(assets, os.path.basename(blobpath)), "rb") as f:
            return f.read()

    tiktoken.load.read_file = read_local
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    enc = tiktoken.get_encoding("gpt2")
    return [enc.encode_ordinary(p) for p in PROMPTS]


def summarise(model, ids):
    """Per-position logit summaries and the greedy continuation of one prompt."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0].float()  # [T, V]
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            use_cache=True,
            pad_token_id=50256,
        )
    return {
        "logsumexp": torch.logsumexp(logits, dim=-1).tolist(),
        "argmax": logits.argmax(dim=-1).tolist(),
        "probe_logits": logits[:, PROBE_IDS].tolist(),
        "greedy": out[0, len(ids):].tolist(),
    }


def make(assets):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50257,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.1,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    os.makedirs(FIXTURE, exist_ok=True)
    model.half().save_pretrained(FIXTURE, safe_serialization=True)
    # What quill computes: the float16 weights, in float32.
    model = transformers.GPT2LMHeadModel.from_pretrained(FIXTURE, dtype=torch.float32).eval()
    prompts = []
    for text, ids in zip(PROMPTS, gpt2_ids(assets)):
        entry = {"text": text, "ids": ids, **summarise(model, ids)}
        # Greedy steps must not be near-ties, or 1e-4 of float noise could flip them.
        with torch.no_grad():
            seq = torch.tensor([ids + entry["greedy"]])
            logits = model(seq).logits[0, len(ids) - 1 : -1]
            top2 = logits.topk(2, dim=-1).values
            gap = (top2[:, 0] - top2[:, 1]).min().item()
        assert gap > 1e-3, f"near-tie in the greedy continuation of {text!r}: {gap}"
        entry["min_greedy_gap"] = gap
        prompts.append(entry)
    expected = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "probe_ids": PROBE_IDS,
        "prompts": prompts,
    }
    with open(os.path.join(FIXTURE, "expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")
    print("wrote", FIXTURE)


def check_export(directory):
    with open(os.path.join(FIXTURE, "expected.json")) as f:
        expected = json.load(f)
    model = transformers.GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32).eval()
    worst = 0.0
    for entry in expected["prompts"]:
        got = summarise(model, entry["ids"])
        for key in ("logsumexp", "probe_logits"):
            diff = np.abs(np.array(got[key]) - np.array(entry[key])).max()
            worst = max(worst, float(diff))
        assert got["argmax"] == entry["argmax"], entry["text"]
        assert got["greedy"] == entry["greedy"], (entry["text"], got["greedy"])
    assert worst <= TOLERANCE, worst
    print(f"transformers {transformers.__version__} loads {directory}: "
          f"max |logit difference| {worst:.3g}, greedy continuations identical")


if __name__ == "__main__":
    {"make": make, "check-export": check_export}[sys.argv[1]](sys.argv[2])
