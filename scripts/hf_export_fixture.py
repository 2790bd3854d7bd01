#!/usr/bin/env python3
"""transformers runs quill's Hugging Face export: the expectations of
crates/quill-cli/tests/it/hf_export.rs.

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 \
        transformers==4.57.1 tokenizers==0.22.2 safetensors==0.8.0 numpy==2.4.6
    cargo build --release -p quill-cli
    /tmp/hf/bin/python scripts/hf_export_fixture.py target/release/quill \
        ../shared/data/tinyshakespeare.txt

For each tokenizer kind (characters, GPT-2's BPE, a trained bpe:512) quill prepares
tiny Shakespeare, trains the `cpu` preset (bias = false) for a few steps with a context
of 128 (transformers' GPT-2 stops at its `n_positions`, where quill slides the window
on: 128 holds the prompt and 100 new tokens), exports the
last checkpoint with `quill export --format hf` and continues a prompt greedily with
`quill sample --temperature 0`. Then, from the export alone:

- `AutoTokenizer` encodes the validation text (the corpus' last 10% of bytes, which
  `quill data prepare` tokenizes on its own) to exactly the ids of quill's val.bin, and
  decodes them back to the text;
- `pipeline("text-generation")` with `do_sample=False` continues the prompt with exactly
  quill's 100 greedy tokens, and so does `generate(do_sample=False)`;
- the logits of `AutoModelForCausalLM` on the prompt and that continuation are written
  down (8 positions: the logsumexp, the argmax and 64 fixed token ids).

The expectations go to crates/quill-cli/tests/fixtures/hf-export.json; the Rust test
repeats quill's side (same commands, same settings, read from that file) and checks
its tokenizer ids, its greedy text and its logits (within 1e-4) against them.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

PROMPT = "ROMEO:"
NEW_TOKENS = 100
# (name, --tokenizer, training steps)
MODELS = [("char", "char", 200), ("gpt2", "gpt2", 40), ("bpe", "bpe:512", 200)]
BLOCK = 128
POSITIONS = 8
PROBE_IDS = 64
OUT = os.path.join(
    os.path.dirname(__file__), "..", "crates", "quill-cli", "tests", "fixtures", "hf-export.json"
)


def quill(binary, *args):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True)
    return out.stdout


def val_tokens(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype=np.int32)
        assert header[0] == 20240520, "an llm.c token file"
        dtype = {1: np.uint16, 2: np.uint32}[int(header[1])]
        tokens = np.frombuffer(f.read(), dtype=dtype)
    assert len(tokens) == header[2]
    return tokens.astype(np.int64).tolist()


def ids_sha256(ids):
    return hashlib.sha256(np.asarray(ids, dtype="<u4").tobytes()).hexdigest()


def main(binary, corpus):
    torch.manual_seed(0)
    text = open(corpus, "rb").read()
    val_text = text[int(len(text) * 0.9):].decode("utf-8")
    expected = {
        "made_by": "scripts/hf_export_fixture.py",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": __import__("tokenizers").__version__,
        },
        "prompt": PROMPT,
        "max_new_tokens": NEW_TOKENS,
        "block_size": BLOCK,
        "models": {},
    }
    work = tempfile.mkdtemp()
    for name, tokenizer, steps in MODELS:
        data, run, hf = (os.path.join(work, d, name) for d in ("data", "runs", "hf"))
        quill(binary, "data", "prepare", "--data", corpus, "--tokenizer", tokenizer, "--out", data)
        quill(binary, "train", "--preset", "cpu", "--data", data, "--max-iters", str(steps),
              "--block-size", str(BLOCK), "--eval-interval", str(steps), "--eval-iters", "2", "--final-eval-iters", "2",
              "--sample-tokens", "0", "--out", run)
        quill(binary, "export", "--format", "hf", "--checkpoint", os.path.join(run, "last"),
              "--out", hf)
        greedy = quill(binary, "sample", "--checkpoint", os.path.join(run, "last"), "--prompt",
                       PROMPT, "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS))
        # quill prints the prompt, the continuation and a newline.
        assert greedy.startswith(PROMPT) and greedy.endswith("\n")
        quill_text = greedy[len(PROMPT):-1]

        tok = AutoTokenizer.from_pretrained(hf)
        ids = tok(val_text)["input_ids"]
        assert ids == val_tokens(os.path.join(data, "val.bin")), f"{name}: val ids differ"
        assert tok.decode(ids) == val_text, f"{name}: val text does not round-trip"

        model = AutoModelForCausalLM.from_pretrained(hf, torch_dtype=torch.float32).eval()
        prompt_ids = tok(PROMPT, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(prompt_ids, do_sample=False, max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, pad_token_id=0)
        new_ids = out[0, prompt_ids.shape[1]:].tolist()
        hf_text = tok.decode(new_ids)
        assert hf_text == quill_text, f"{name}: greedy differs:\n{hf_text!r}\n{quill_text!r}"
        pipe = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
        piped = pipe(PROMPT, do_sample=False, max_new_tokens=NEW_TOKENS,
                     min_new_tokens=NEW_TOKENS, pad_token_id=0, return_full_text=False)
        assert piped[0]["generated_text"] == quill_text, f"{name}: the pipeline's text differs"

        all_ids = out[0].tolist()
        with torch.no_grad():
            logits = model(out).logits[0].float()
        positions = np.linspace(0, len(all_ids) - 1, POSITIONS).round().astype(int).tolist()
        vocab = logits.shape[1]
        probe = sorted(set(np.linspace(0, vocab - 1, PROBE_IDS).round().astype(int).tolist()))
        expected["models"][name] = {
            "tokenizer": tokenizer,
            "max_iters": steps,
            "val_tokens": len(ids),
            "val_ids_sha256": ids_sha256(ids),
            "prompt_ids": prompt_ids[0].tolist(),
            "greedy_ids": new_ids,
            "greedy_text": hf_text,
            "positions": positions,
            "probe_ids": probe,
            "logsumexp": [torch.logsumexp(logits[p], 0).item() for p in positions],
            "argmax": [int(logits[p].argmax()) for p in positions],
            "logits": [[logits[p, i].item() for i in probe] for p in positions],
        }
        print(f"{name}: {len(ids)} val ids identical, greedy identical: {hf_text[:60]!r}")
    with open(OUT, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
