#!/usr/bin/env python3
"""Hostile and broken nanoGPT checkpoints for `quill import nanogpt`'s tests.

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 numpy==2.4.6
    /tmp/hf/bin/python scripts/hostile_nanogpt.py

Each file starts from the real checkpoint `crates/quill-train/tests/fixtures/nanogpt/
ckpt.pt` (written by torch.save, see scripts/nanogpt_fixture.py), loaded with torch and
saved again by torch.save with one thing changed, or with its archive or pickle
rewritten where torch itself would never write the lie. Into
crates/quill-train/tests/fixtures/nanogpt/hostile/:

- short-storage.pt: one storage file cut to half its bytes;
- missing-storage.pt: one storage file left out of the archive;
- offset-past-end.pt: a tensor whose storage offset lies past its storage's end;
- strided.pt: a weight saved as a transposed view by torch.save (a real strided tensor);
- shape-lie.pt: a tensor declaring 2^20 x 2^20 elements over its small storage;
- laughs.pt: a pickle whose memo copies double 40 times ("billion laughs"), 1 KB;
- deep.pt: a pickle nesting lists 100,000 deep;
- laughs-meta.pkl, deep-meta.pkl: the same two in a character vocabulary's meta.pkl;
- nan-lr.pt, eval-interval-0.pt, beta2-2.pt, warmup-negative.pt, grad-accum-2-40.pt,
  iter-num-2-62.pt: torch.save'd checkpoints whose settings no run can have.

The pickles' tensors keep torch's own encoding: the file is unpickled with its globals
and persistent ids recorded, changed, and pickled again with the same globals and ids.
"""
import collections
import io
import os
import pickle
import shutil
import struct
import sys
import zipfile

import torch

assert torch.__version__.startswith("2.15.0"), torch.__version__

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "crates", "quill-train", "tests", "fixtures", "nanogpt")
SOURCE = os.path.join(FIXTURES, "ckpt.pt")
OUT = os.path.join(FIXTURES, "hostile")
WEIGHT = "transformer.wte.weight"


class Call:
    """A recorded call of a global (a REDUCE), pickled back as the same call."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args


class Recorder:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return Call(self.fn, args)


class Pid:
    def __init__(self, value):
        self.value = value


class Reader(pickle.Unpickler):
    def find_class(self, module, name):
        real = super().find_class(module, name)
        # The tensor rebuilders are recorded; classes (storage types) stay themselves.
        if module == "torch._utils" and name.startswith("_rebuild"):
            return Recorder(real)
        return real

    def persistent_load(self, pid):
        return Pid(pid)


class Writer(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, Call):
            return obj.fn, obj.args
        return NotImplemented

    def persistent_id(self, obj):
        return obj.value if isinstance(obj, Pid) else None


def entries(path):
    with zipfile.ZipFile(path) as z:
        return [(info, z.read(info.filename)) for info in z.infolist()]


def write_zip(path, items):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in items:
            z.writestr(name, data)


def pickle_name(items):
    return next(info.filename for info, _ in items if info.filename.endswith("data.pkl"))


def rewrite_pickle(source, out, change):
    """`source` with its data.pkl unpickled (tensors as recorded calls), passed to
    `change`, and pickled again (protocol 2, as torch.save)."""
    items = entries(source)
    name = pickle_name(items)
    data = dict((info.filename, blob) for info, blob in items)
    top = Reader(io.BytesIO(data[name])).load()
    change(top, data, name.rsplit("/", 1)[0])
    buf = io.BytesIO()
    Writer(buf, protocol=2).dump(top)
    data[name] = buf.getvalue()
    write_zip(out, [(info.filename, data[info.filename]) for info, _ in items
                    if info.filename in data])


def tensor_call(call):
    """The `_rebuild_tensor_v2` call inside a state-dict entry."""
    while call.fn.__name__ != "_rebuild_tensor_v2":
        call = call.args[0]
    return call


def storage_key(call):
    return tensor_call(call).args[0].value[2]


def short_storage(top, data, prefix):
    key = f"{prefix}/data/{storage_key(top['model'][WEIGHT])}"
    data[key] = data[key][: len(data[key]) // 2]


def missing_storage(top, data, prefix):
    del data[f"{prefix}/data/{storage_key(top['model'][WEIGHT])}"]


def offset_past_end(top, data, prefix):
    call = tensor_call(top["model"][WEIGHT])
    numel = call.args[0].value[4]
    call.args = (call.args[0], numel + 16) + call.args[2:]


def shape_lie(top, data, prefix):
    call = tensor_call(top["model"][WEIGHT])
    call.args = (call.args[0], 0, (1 << 20, 1 << 20), (1 << 20, 1)) + call.args[4:]


def laughs():
    """A dictionary whose one value is a list that doubles 40 times through the memo."""
    out = bytearray(b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01")
    out += b"X\x03\x00\x00\x00lolq\x020"  # memo 2 = 'lol'
    for slot in range(3, 43):
        # memo[slot] = [memo[slot-1], memo[slot-1]], put after it is filled
        out += b"](h" + bytes([slot - 1]) + b"h" + bytes([slot - 1]) + b"eq" + bytes([slot])
        out += b"0" if slot < 42 else b""
    out += b"s."  # {'model': <the last list>}
    return bytes(out)


def deep(depth=100_000):
    """A dictionary whose one value is a list nested `depth` deep."""
    out = bytearray(b"\x80\x02}X\x05\x00\x00\x00model")
    out += b"]" * depth + b"a" * (depth - 1)
    out += b"s."
    return bytes(out)


def with_pickle(source, out, blob):
    items = entries(source)
    name = pickle_name(items)
    write_zip(out, [(info.filename, blob if info.filename == name else data)
                    for info, data in items])


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    path = lambda name: os.path.join(OUT, name)
    # torch itself writes the strided one: a transposed view, saved as is.
    checkpoint = torch.load(SOURCE, map_location="cpu", weights_only=True)
    checkpoint["model"][WEIGHT] = checkpoint["model"][WEIGHT].t().contiguous().t()
    assert not checkpoint["model"][WEIGHT].is_contiguous()
    torch.save(checkpoint, path("strided.pt"))
    # Settings no run can have, saved by torch.save as train.py saves its config.
    for name, key, value in [("nan-lr.pt", "learning_rate", float("nan")),
                             ("eval-interval-0.pt", "eval_interval", 0),
                             ("beta2-2.pt", "beta2", 2.0),
                             ("warmup-negative.pt", "warmup_iters", -5),
                             ("grad-accum-2-40.pt", "gradient_accumulation_steps", 1 << 40),
                             ("iter-num-2-62.pt", "iter_num", 1 << 62)]:
        checkpoint = torch.load(SOURCE, map_location="cpu", weights_only=True)
        if key == "iter_num":
            checkpoint[key] = value
        else:
            checkpoint["config"][key] = value
        torch.save(checkpoint, path(name))
    # The others change one thing of torch's own file.
    torch.save(torch.load(SOURCE, map_location="cpu", weights_only=True), path("base.pt"))
    for name, change in [("short-storage.pt", short_storage),
                         ("missing-storage.pt", missing_storage),
                         ("offset-past-end.pt", offset_past_end),
                         ("shape-lie.pt", shape_lie)]:
        rewrite_pickle(path("base.pt"), path(name), change)
    with_pickle(path("base.pt"), path("laughs.pt"), laughs())
    with_pickle(path("base.pt"), path("deep.pt"), deep())
    os.remove(path("base.pt"))
    # meta.pkl is a plain pickle (pickle.dump): the same two, as plain pickles.
    with open(path("laughs-meta.pkl"), "wb") as f:
        f.write(laughs())
    with open(path("deep-meta.pkl"), "wb") as f:
        f.write(deep())
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(path(name)), "bytes")


if __name__ == "__main__":
    sys.exit(main())
