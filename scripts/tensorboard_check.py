#!/usr/bin/env python3
"""TensorBoard's own reader on quill's event files, value by value.

    pip install "tensorboard==2.20.0"
    python3 scripts/tensorboard_check.py CORPUS [QUILL_BINARY] [WORKDIR]

Trains the cpu preset (100 steps, evaluating every 25) into WORKDIR/run, keeps a copy
of its step-100 checkpoint, continues the run to step 200, then resumes the run once
more from the step-100 copy: the event file must drop the steps the second leg wrote
past 100 and hold each step once. TensorBoard's `EventAccumulator` then reads the run
directory and every scalar is compared with `steps.jsonl` (train/loss, train/lr,
train/grad_norm, train/tokens_per_s) and `metrics.jsonl` (eval/train_loss,
eval/val_loss) — same steps, same float32 values — and the text (the configuration at
step 0, a sample at each evaluation) is checked. Exits non-zero at the first
difference. QUILL_BINARY defaults to target/release/quill, WORKDIR to a new
temporary directory.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # pinned: tensorboard==2.20.0
import tensorboard

assert tensorboard.__version__ == "2.20.0", f"tensorboard {tensorboard.__version__}; this script pins 2.20.0"


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def train(quill, corpus, out, *extra):
    start = [] if "--resume" in extra else ["--preset", "cpu"]
    subprocess.run(
        [quill, "train", *start, "--data", corpus, "--out", out, "--eval-interval", "25",
         "--eval-iters", "2", "--final-eval-iters", "2", "--sample-chars", "30", *extra],
        check=True, capture_output=True)


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    corpus = sys.argv[1]
    quill = sys.argv[2] if len(sys.argv) > 2 else "target/release/quill"
    work = sys.argv[3] if len(sys.argv) > 3 else tempfile.mkdtemp()
    run = os.path.join(work, "run")
    shutil.rmtree(run, ignore_errors=True)
    train(quill, corpus, run, "--max-iters", "100")
    at_100 = os.path.join(work, "at-100")
    shutil.rmtree(at_100, ignore_errors=True)
    shutil.copytree(os.path.join(run, "last"), at_100)
    train(quill, corpus, run, "--resume", os.path.join(run, "last"), "--max-iters", "200")
    first = EventAccumulator(run, size_guidance={"scalars": 0, "tensors": 0})
    first.Reload()
    before = [e.value for e in first.Scalars("train/loss")]
    # Resumed from step 100 again: the 100 steps written past it must go.
    train(quill, corpus, run, "--resume", at_100, "--max-iters", "200")

    files = [f for f in os.listdir(run) if "tfevents" in f]
    print(f"event files: {files}")
    acc = EventAccumulator(run, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    steps = jsonl(os.path.join(run, "steps.jsonl"))
    evals = jsonl(os.path.join(run, "metrics.jsonl"))
    assert [s["iter"] for s in steps] == list(range(1, 201)), "steps.jsonl holds steps 1..200 once"
    for tag, key in [("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm"),
                     ("train/tokens_per_s", "tokens_per_s")]:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [s["iter"] for s in steps], f"{tag}: steps differ"
        for e, s in zip(events, steps):
            assert e.value == f32(s[key]), f"{tag} at step {e.step}: {e.value} vs {s[key]}"
        print(f"{tag}: {len(events)} steps, each once, equal to steps.jsonl")
    for tag, key in [("eval/train_loss", "train_loss"), ("eval/val_loss", "val_loss")]:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["iter"] for r in evals], f"{tag}: steps differ"
        for e, r in zip(events, evals):
            assert e.value == f32(r[key]), f"{tag} at step {e.step}: {e.value} vs {r[key]}"
        print(f"{tag}: steps {[e.step for e in events]}, equal to metrics.jsonl")
    # Deterministic resume: the same losses as the leg it replaced.
    assert [e.value for e in acc.Scalars("train/loss")] == before, "the resumed losses differ"
    print("the losses after the second resume equal those of the first: exact resume")
    config = acc.Tensors("config")
    assert [e.step for e in config] == [0], config
    text = config[0].tensor_proto.string_val[0].decode()
    assert "n_layer = 4" in text and "max_iters = 100" in text, text
    samples = acc.Tensors("eval/sample")
    assert [e.step for e in samples] == [r["iter"] for r in evals], [e.step for e in samples]
    print(f"text: the configuration at step 0, a sample at steps {[e.step for e in samples]}")
    print(f"tensorboard {tensorboard.__version__}: every value checked")


if __name__ == "__main__":
    main()
