#!/usr/bin/env python3
"""Writes crates/quill-data/tests/fixtures/gpt2-vectors.json: the ids OpenAI's tiktoken
gives for GPT-2 (`tiktoken.get_encoding("gpt2").encode_ordinary`) on tricky strings and
on seeded random strings, plus the sha256 of nanoGPT's data/shakespeare train.bin and
val.bin (raw uint16, as its prepare.py writes them).

Offline: tiktoken's own download is redirected to the GPT-2 files that the tiktoken-rs
crate ships (vocab.bpe, encoder.json); tiktoken checks their sha256 against OpenAI's.

    python3 -m venv /tmp/tk && /tmp/tk/bin/pip install tiktoken==0.14.0
    /tmp/tk/bin/python scripts/gpt2_vectors.py \
        ~/.cargo/registry/src/index.crates.io-*/tiktoken-rs-0.12.1/assets \
        ../shared/data/tinyshakespeare.txt
"""
import hashlib
import json
import os
import random
import sys

import tiktoken
import tiktoken.load

assets, shakespeare = sys.argv[1], sys.argv[2]


def read_local(blobpath):
    with open(os.path.join(assets, os.path.basename(blobpath)), "rb") as f:
        return f.read()


tiktoken.load.read_file = read_local
os.environ["TIKTOKEN_CACHE_DIR"] = ""  # no cache: always the checked local files
assert tiktoken.__version__ == "0.14.0", tiktoken.__version__
enc = tiktoken.get_encoding("gpt2")

tricky = [
    "Hello world",
    "",
    " ",
    "\n",
    "a  b   c    d",
    "   leading spaces",
    "trailing spaces   ",
    "\n\n\nthree newlines",
    "tabs\t\tand\t \tmixed \n \n  whitespace",
    "ends with newlines\n\n",
    "  \n  ",
    "I'm you're they've he'll she'd it's DON'T 'quoted' rock'n'roll",
    "can't won't shouldn't y'all o'clock",
    "🦀🎉 👍🏽 family: 👨‍👩‍👧‍👦 flags: 🇯🇵🇫🇷",
    "日本語のテキスト、中文文本。한국어 텍스트",
    "混合 mixed 文字 text",
    "e\u0301 (combining) \u200b(zero width) \ufeff(BOM) \u00a0(nbsp) \u2028(line sep)",
    "\ufffd replacement \U0010ffff max \u0000 nul \u007f del \u0080 c1 \u00ad shy",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 1000,
    "ab" * 300 + " " + "x" * 257,
    "1234567890 3.14159 1,000,000 -42 1e-9 ½ ٣ 五",
    'fn main() {\n    println!("hi {}", 1 + 2);\n}\n',
    "<|endoftext|> is ordinary text here",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "ÀÉÎÕÜ àéîõü ßẞ ﬁ ǅ",
    "Ελληνικά Кириллица עברית العربية हिन्दी ไทย",
    "!!!??? ... --- *** ### $$$ %%% ^^^ &&& ((( )))",
    " ' '' ''' 's 'S 'Ll",
]

pool = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" " * 10 + "\n" * 4 + "\t\r")
    + list(".,;:!?'\"-()[]{}<>/\\@#$%^&*_+=|~`")
    + ["'s", "'t", "'re", "'ll", "é", "ü", "ß", "日", "本", "語", "한", "🦀", "👍🏽", "\u00a0", "\u200b", "\u0301", "٣", "½"]
)
rng = random.Random(0)
randoms = ["".join(rng.choice(pool) for _ in range(rng.randrange(0, 80))) for _ in range(400)]

vectors = [{"text": t, "ids": enc.encode_ordinary(t)} for t in tricky + randoms]

# nanoGPT's data/shakespeare/prepare.py: split the characters 90/10, encode each part.
with open(shakespeare, "r", encoding="utf-8") as f:
    data = f.read()
n = len(data)
train_ids = enc.encode_ordinary(data[: int(n * 0.9)])
val_ids = enc.encode_ordinary(data[int(n * 0.9) :])


def uint16_sha256(ids):
    return hashlib.sha256(b"".join(i.to_bytes(2, "little") for i in ids)).hexdigest()


out = {
    "generator": "scripts/gpt2_vectors.py",
    "tiktoken": tiktoken.__version__,
    "encoding": "gpt2",
    "vectors": vectors,
    "shakespeare": {
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "train_bin_sha256": uint16_sha256(train_ids),
        "val_bin_sha256": uint16_sha256(val_ids),
    },
}
path = os.path.join(os.path.dirname(__file__), "..", "crates", "quill-data", "tests", "fixtures", "gpt2-vectors.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=0)
    f.write("\n")
print(f"wrote {len(vectors)} vectors to {os.path.normpath(path)}")
