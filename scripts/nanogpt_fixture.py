#!/usr/bin/env python3
"""The nanoGPT checkpoints of quill's `quill import nanogpt` tests.

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 numpy==2.4.6
    git -C nanoGPT show 3adf61e154c3fe3fca428ad6bc3818b27a3b8291:model.py > /tmp/model.py
    /tmp/hf/bin/python scripts/nanogpt_fixture.py /tmp/model.py ../shared/data/tinyshakespeare.txt

nanoGPT's own `model.py` (karpathy/nanoGPT at commit 3adf61e, checked by its sha256)
trains a tiny character model (2 layers, 2 heads, 16 wide, 32 characters of context,
no biases, dropout 0.2: nanoGPT's `train.py` defaults at a small size) for 400 steps
on tiny Shakespeare, as `train.py` does (AdamW from `configure_optimizers`, warmup and
cosine decay, clipping at 1), and saves what `train.py` and `data/shakespeare_char/
prepare.py` save. Into crates/quill-train/tests/fixtures/nanogpt/:

- ckpt.pt: `{'model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss',
  'config'}`, exactly `train.py`'s checkpoint dictionary, by `torch.save`;
- ckpt-compiled.pt: the same with the `_orig_mod.` prefix `torch.compile` gives the
  state dict's names (what `train.py` saves with `compile = True`);
- meta.pkl: `{'vocab_size', 'itos', 'stoi'}` by `pickle.dump`, as `prepare.py` writes;
- evil.pt: a checkpoint with one more entry whose unpickling would call `os.system`
  (quill must refuse it, never run it); not-nanogpt.pt: a bare state dict;
- expected.json: the 100-character greedy continuation of a prompt by nanoGPT's
  `generate` with `top_k=1` (`sample.py` with temperature → 0: the argmax), the logits
  of every position of the prompt and continuation's last window, and the AdamW state
  (step, and a few moments) that resuming must carry.
"""
import hashlib
import json
import math
import os
import pickle
import sys

import numpy as np
import torch

MODEL_PY_SHA256 = "7c01703240dbec5d554527dc666e35b3df8391d0b117fddc07afcf325a21d11c"
OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "quill-train", "tests",
                   "fixtures", "nanogpt")
PROMPT = "ROMEO:"
NEW_TOKENS = 100


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this checkpoint ran code",))


def main(model_py, corpus):
    source = open(model_py, "rb").read()
    assert hashlib.sha256(source).hexdigest() == MODEL_PY_SHA256, "nanoGPT's model.py at 3adf61e"
    scope = {"__name__": "nanogpt_model"}
    exec(compile(source, model_py, "exec"), scope)
    GPT, GPTConfig = scope["GPT"], scope["GPTConfig"]

    # data/shakespeare_char/prepare.py
    data = open(corpus).read()
    chars = sorted(list(set(data)))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    n = len(data)
    train_ids = np.array([stoi[c] for c in data[: int(n * 0.9)]], dtype=np.uint16)
    meta = {"vocab_size": len(chars), "itos": itos, "stoi": stoi}

    # train.py, at a small size
    torch.manual_seed(1337)
    config = dict(batch_size=8, block_size=32, gradient_accumulation_steps=1, n_layer=2,
                  n_head=2, n_embd=16, dropout=0.2, bias=False, learning_rate=5e-3,
                  max_iters=400, weight_decay=1e-1, beta1=0.9, beta2=0.99, grad_clip=1.0,
                  decay_lr=True, warmup_iters=20, lr_decay_iters=400, min_lr=5e-4,
                  eval_interval=400, eval_iters=4, dataset="shakespeare_char")
    model_args = dict(n_layer=2, n_head=2, n_embd=16, block_size=32, bias=False,
                      vocab_size=len(chars), dropout=0.2)
    model = GPT(GPTConfig(**model_args))
    optimizer = model.configure_optimizers(config["weight_decay"], config["learning_rate"],
                                           (config["beta1"], config["beta2"]), "cpu")
    data_t = torch.from_numpy(train_ids.astype(np.int64))

    def get_batch():
        ix = torch.randint(len(data_t) - 32, (8,))
        return (torch.stack([data_t[i:i + 32] for i in ix]),
                torch.stack([data_t[i + 1:i + 33] for i in ix]))

    def get_lr(it):
        if it < config["warmup_iters"]:
            return config["learning_rate"] * (it + 1) / (config["warmup_iters"] + 1)
        if it > config["lr_decay_iters"]:
            return config["min_lr"]
        ratio = (it - config["warmup_iters"]) / (config["lr_decay_iters"] - config["warmup_iters"])
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        return config["min_lr"] + coeff * (config["learning_rate"] - config["min_lr"])

    model.train()
    for it in range(config["max_iters"]):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it)
        x, y = get_batch()
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        losses = torch.zeros(config["eval_iters"])
        for k in range(config["eval_iters"]):
            x, y = get_batch()
            losses[k] = model(x, y)[1]
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "model_args": model_args,
        "iter_num": config["max_iters"],
        "best_val_loss": losses.mean(),
        "config": config,
    }
    os.makedirs(OUT, exist_ok=True)
    torch.save(checkpoint, os.path.join(OUT, "ckpt.pt"))
    compiled = dict(checkpoint, model={"_orig_mod." + k: v for k, v in model.state_dict().items()})
    torch.save(compiled, os.path.join(OUT, "ckpt-compiled.pt"))
    torch.save(dict(checkpoint, evil=Evil()), os.path.join(OUT, "evil.pt"))
    torch.save(model.state_dict(), os.path.join(OUT, "not-nanogpt.pt"))
    with open(os.path.join(OUT, "meta.pkl"), "wb") as f:
        pickle.dump(meta, f)

    # sample.py with temperature → 0: top_k=1 keeps only the argmax.
    prompt = torch.tensor([[stoi[c] for c in PROMPT]])
    with torch.no_grad():
        out = model.generate(prompt, NEW_TOKENS, temperature=1.0, top_k=1)
        ids = out[0].tolist()
        window = out[:, -model_args["block_size"]:]
        logits, _ = model(window, window)  # targets make nanoGPT return every position
    greedy = "".join(itos[i] for i in ids[len(PROMPT):])
    decay, no_decay = optimizer.param_groups
    # The state dict numbers the parameters in the order of the optimizer's groups.
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    state = optimizer.state_dict()["state"]
    moments = {}
    for index, name in enumerate(names):
        s = state[index]
        moments[name] = {
            "exp_avg": s["exp_avg"].flatten()[:4].tolist(),
            "exp_avg_sq": s["exp_avg_sq"].flatten()[:4].tolist(),
        }
    expected = {
        "made_by": "scripts/nanogpt_fixture.py",
        "nanogpt_commit": "3adf61e154c3fe3fca428ad6bc3818b27a3b8291",
        "torch": torch.__version__,
        "prompt": PROMPT,
        "greedy": greedy,
        "window_ids": window[0].tolist(),
        "window_logits": logits[0].tolist(),
        "iter_num": config["max_iters"],
        "optimizer_step": int(state[0]["step"]),
        "best_val_loss": losses.mean().item(),
        "decay_params": len(decay["params"]),
        "no_decay_params": len(no_decay["params"]),
        "moments": moments,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"greedy: {greedy!r}")
    print(f"wrote {os.path.normpath(OUT)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
