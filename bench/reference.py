#!/usr/bin/env python3
"""PyTorch comparator for `quill bench`: the same model, data and optimizer, timed the same way.

Not part of quill: `cargo xtask bench` runs it only when `import torch` works, so that
BENCHMARKS.md shows quill/PyTorch ratios measured in one run on one machine.

Usage: reference.py --config CONFIG.json --data input.txt [--iters N] [--warmup N]
                    [--eval-iters N] [--threads N] [--to-loss LOSS [--eval-every N]]

CONFIG.json is the "config" object of `quill bench --json` (quill's TrainConfig), so both
sides train exactly the same shapes and hyperparameters. The model is nanoGPT's (pre-LN
blocks, fused QKV, GELU MLP, tied or untied head, GPT-2 init); the optimizer is
torch.optim.AdamW with quill's decay groups (Linear weights, and a tied wte, decay;
biases, LayerNorms and untied embeddings do not), global-norm clipping and the cosine
schedule with linear warm-up. Prints one JSON object with the fields of `quill bench`.

With --to-loss, it measures time to target as `quill bench --to-loss` does: from fresh
weights, train until the val loss, evaluated every --eval-every steps on the same
eval_iters x batch_size evenly spaced windows (start i*(len-block_size-1)//n), is at most
LOSS, or max_iters steps are done; it prints the fields of `quill bench --to-loss`.
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head, self.n_embd = c["n_head"], c["n_embd"]
        self.c_attn = nn.Linear(c["n_embd"], 3 * c["n_embd"], bias=c["bias"])
        self.c_proj = nn.Linear(c["n_embd"], c["n_embd"], bias=c["bias"])
        self.attn_dropout = nn.Dropout(c["dropout"])
        self.resid_dropout = nn.Dropout(c["dropout"])
        t = c["block_size"]
        self.register_buffer("mask", torch.tril(torch.ones(t, t)).view(1, 1, t, t))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        heads = lambda m: m.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)  # [B, nh, T, hs]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c["n_embd"], bias=c["bias"])
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c["n_embd"], bias=c["bias"])
        self.mlp = nn.Sequential(
            nn.Linear(c["n_embd"], 4 * c["n_embd"], bias=c["bias"]),
            nn.GELU(),
            nn.Linear(4 * c["n_embd"], c["n_embd"], bias=c["bias"]),
            nn.Dropout(c["dropout"]),
        )

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c, vocab_size):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, c["n_embd"])
        self.wpe = nn.Embedding(c["block_size"], c["n_embd"])
        self.drop = nn.Dropout(c["dropout"])
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["n_layer"])])
        self.ln_f = nn.LayerNorm(c["n_embd"], bias=c["bias"])
        self.lm_head = nn.Linear(c["n_embd"], vocab_size, bias=False)
        if c["tie_weights"]:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c["n_layer"]))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        T = idx.size(1)
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def param_groups(model, c):
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # a tied wte appears once, as wte
        linear_weight = p.dim() >= 2 and not name.startswith(("wte", "wpe"))
        tied_wte = name.startswith("wte") and c["tie_weights"]
        (decay if linear_weight or tied_wte else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": c["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def learning_rate(c, it):
    if c["schedule"] == "constant":
        return c["lr"]
    if it < c["warmup_iters"]:
        return c["lr"] * (it + 1) / (c["warmup_iters"] + 1)
    if it >= c["max_iters"]:
        return c["min_lr"]
    ratio = (it - c["warmup_iters"]) / (c["max_iters"] - c["warmup_iters"])
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return c["min_lr"] + coeff * (c["lr"] - c["min_lr"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eval-iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--to-loss", type=float, default=None)
    ap.add_argument("--eval-every", type=int, default=50)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with open(args.config) as f:
        c = json.load(f)
    nanogpt = {"position": "learned", "norm": "layer", "activation": "gelu",
               "zero_init_proj": False, "optimizer": "adamw"}
    for key, value in nanogpt.items():
        if c.get(key, value) != value:
            raise SystemExit(f"reference.py implements nanoGPT only: {key} must be {value!r}")
    if c["schedule"] not in ("constant", "cosine"):
        raise SystemExit("reference.py implements the constant and cosine schedules only")
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    n = int((1.0 - c["val_fraction"]) * len(data))
    train, val = data[:n], data[n:]
    B, T = c["batch_size"], c["block_size"]
    g = torch.Generator().manual_seed(c["seed"])

    def batch(split):
        ix = torch.randint(len(split) - T, (B,), generator=g)
        x = torch.stack([split[i : i + T] for i in ix])
        y = torch.stack([split[i + 1 : i + 1 + T] for i in ix])
        return x, y

    cold = time.perf_counter()
    torch.manual_seed(c["seed"])
    model = GPT(c, len(chars))
    optim = torch.optim.AdamW(
        param_groups(model, c), lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"]
    )

    def step(it):
        for group in optim.param_groups:
            group["lr"] = learning_rate(c, it)
        loss_sum = 0.0
        for _ in range(c["grad_accum"]):
            x, y = batch(train)
            loss = model(x, y) / c["grad_accum"]
            loss.backward()
            loss_sum += loss.item()
        if c["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip"])
        optim.step()
        optim.zero_grad(set_to_none=True)
        return loss_sum

    model.train()
    if args.to_loss is not None:
        to_loss(args, c, model, step, val, cold)
        return
    step(0)
    first_step_s = time.perf_counter() - cold
    for it in range(1, args.warmup + 1):
        step(it)
    start = time.perf_counter()
    losses = [step(it) for it in range(args.warmup + 1, args.warmup + 1 + args.iters)]
    seconds = time.perf_counter() - start
    tokens_per_iter = B * T * c["grad_accum"]
    train_tokens_per_s = args.iters * tokens_per_iter / seconds

    n_params = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    flops_per_token = 6 * n_params + 12 * c["n_layer"] * c["n_embd"] * T

    model.eval()
    with torch.no_grad():
        model(*batch(val))
        start = time.perf_counter()
        for _ in range(args.eval_iters):
            model(*batch(val))
        eval_s = time.perf_counter() - start

    print(json.dumps({
        "backend": f"pytorch {torch.__version__} eager cpu",
        "num_threads": torch.get_num_threads(),
        "first_step_s": first_step_s,
        "warmup_iters": args.warmup,
        "iters": args.iters,
        "ms_per_iter": seconds * 1e3 / args.iters,
        "train_tokens_per_s": train_tokens_per_s,
        "flops_per_token": float(flops_per_token),
        "achieved_tflops": flops_per_token * train_tokens_per_s / 1e12,
        "eval_tokens_per_s": args.eval_iters * B * T / eval_s,
        "mean_loss": sum(losses) / len(losses),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


def to_loss(args, c, model, step, val, cold):
    B, T = c["batch_size"], c["block_size"]
    n = c["eval_iters"] * B
    starts = [i * (len(val) - T - 1) // n for i in range(n)]
    windows = torch.stack([val[s : s + T + 1] for s in starts])

    def val_loss():
        model.eval()
        with torch.no_grad():
            losses = [model(w[:, :-1].contiguous(), w[:, 1:].contiguous()).item()
                      for w in windows.split(B)]
        model.train()
        return sum(losses) / len(losses)

    curve, train_s, it = [], 0.0, 0
    while True:
        if it % args.eval_every == 0 or it == c["max_iters"]:
            loss = val_loss()
            curve.append([it, loss])
            if loss <= args.to_loss or it >= c["max_iters"]:
                break
        start = time.perf_counter()
        step(it)
        train_s += time.perf_counter() - start
        it += 1
    print(json.dumps({
        "backend": f"pytorch {torch.__version__} eager cpu",
        "num_threads": torch.get_num_threads(),
        "target": args.to_loss,
        "reached": loss <= args.to_loss,
        "steps": it,
        "train_s": train_s,
        "wall_s": time.perf_counter() - cold,
        "curve": curve,
        "config": c,
    }))


if __name__ == "__main__":
    main()
