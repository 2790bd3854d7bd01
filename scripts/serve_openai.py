#!/usr/bin/env python3
"""Drives `quill serve` with OpenAI's official Python client, as a user would.

    pip install "openai==2.8.1"
    python3 scripts/serve_openai.py CHECKPOINT [QUILL_BINARY]

Starts `quill serve --checkpoint CHECKPOINT --port 0` with an API key, then:
lists the models; asks for a greedy and a seeded completion and checks each against
`quill sample` with the same settings; streams the same completion and checks the
pieces add up to it, with usage; n > 1 and a stop string; and the errors a client
sees (a bad max_tokens, a wrong key, the chat endpoint). Exits non-zero on the first
difference. QUILL_BINARY defaults to target/release/quill.
"""

import os
import re
import signal
import subprocess
import sys

import openai  # pinned: openai==2.8.1

assert openai.__version__ == "2.8.1", f"openai {openai.__version__}; this script pins 2.8.1"

KEY = "quill-test-key"


def start(quill, checkpoint):
    env = dict(os.environ, QUILL_API_KEY=KEY)
    server = subprocess.Popen(
        [quill, "serve", "--checkpoint", checkpoint, "--port", "0", "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    for line in server.stderr:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if found:
            return server, int(found.group(1))
    raise SystemExit("quill serve stopped before listening")


def sample(quill, checkpoint, prompt, tokens, temperature, seed, samples=1):
    """quill sample's continuations of `prompt`, without it."""
    out = subprocess.run(
        [quill, "sample", "--checkpoint", checkpoint, "--device", "cpu", "--prompt", prompt,
         "--max-new-tokens", str(tokens), "--temperature", str(temperature), "--seed", str(seed),
         "--num-samples", str(samples)],
        check=True, capture_output=True, text=True,
    ).stdout
    if samples == 1:
        assert out.startswith(prompt) and out.endswith("\n"), out
        return [out[len(prompt):-1]]
    texts = out.split("\n---------------\n")
    assert texts[-1] == "" and all(t.startswith(prompt) for t in texts[:-1]), out
    return [t[len(prompt):] for t in texts[:-1]]


def main():
    checkpoint = sys.argv[1]
    quill = sys.argv[2] if len(sys.argv) > 2 else "target/release/quill"
    server, port = start(quill, checkpoint)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY)
        models = [m.id for m in client.models.list()]
        assert models == [checkpoint], models
        print(f"models: {models}")

        for temperature, seed in [(0.0, 1), (0.8, 42)]:
            done = client.completions.create(
                model=checkpoint, prompt="ROMEO:", max_tokens=60, temperature=temperature, seed=seed)
            expected = sample(quill, checkpoint, "ROMEO:", 60, temperature, seed)[0]
            assert done.choices[0].text == expected, (done.choices[0].text, expected)
            assert done.choices[0].finish_reason == "length"
            assert done.usage.completion_tokens == 60, done.usage
            print(f"completion (temperature {temperature}, seed {seed}) equals quill sample: {expected!r}")

            pieces, usage = [], None
            for chunk in client.completions.create(
                    model=checkpoint, prompt="ROMEO:", max_tokens=60, temperature=temperature,
                    seed=seed, stream=True, stream_options={"include_usage": True}):
                pieces.extend(c.text for c in chunk.choices)
                usage = chunk.usage or usage
            assert "".join(pieces) == expected and usage.completion_tokens == 60, (pieces, usage)
            print(f"streamed in {len(pieces)} pieces, the same text; usage {usage.completion_tokens} tokens")

        several = client.completions.create(
            model=checkpoint, prompt="ROMEO:", max_tokens=40, temperature=1.0, seed=7, n=3)
        expected = sample(quill, checkpoint, "ROMEO:", 40, 1.0, 7, samples=3)
        got = [c.text for c in several.choices]
        assert got == expected, (got, expected)
        print("n=3 equals quill sample --num-samples 3")

        stopped = client.completions.create(
            model=checkpoint, prompt="ROMEO:", max_tokens=200, temperature=0.8, seed=42, stop=["\n\n"])
        choice = stopped.choices[0]
        assert "\n\n" not in choice.text and choice.finish_reason == "stop", choice
        print(f"stop at a blank line: {choice.text!r}")

        try:
            client.completions.create(model=checkpoint, prompt="ROMEO:", max_tokens=10**9)
            raise SystemExit("max_tokens 10^9 was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.body["param"] == "max_tokens", e.body
            print(f"400 for max_tokens: {e.body['message']}")
        try:
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong").models.list()
            raise SystemExit("a wrong key was accepted")
        except openai.AuthenticationError as e:
            print(f"401 for a wrong key: {e.body['message']}")
        try:
            client.chat.completions.create(model=checkpoint, messages=[{"role": "user", "content": "hi"}])
            raise SystemExit("chat completions answered")
        except openai.NotFoundError as e:
            print(f"404 for chat: {e.body['message']}")
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code == 0, f"quill serve exited with {code}"
    print("quill serve stopped cleanly (exit 0)")


if __name__ == "__main__":
    main()
