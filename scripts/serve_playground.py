#!/usr/bin/env python3
"""The playground page of `quill serve` in a real headless browser.

    apt-get install chromium chromium-driver     # Debian's Chromium and its driver
    pip install "selenium==4.38.0"
    python3 scripts/serve_playground.py CHECKPOINT [QUILL_BINARY] [SCREENSHOT]

Starts `quill serve --checkpoint CHECKPOINT --port 0` with an API key, opens
http://127.0.0.1:PORT/ in headless Chromium (offline: the page loads nothing from
elsewhere), types the key and a prompt, sets the temperature, seed and max tokens,
clicks Generate, and checks that the text arrives in pieces (it watches it grow while
the stream is open), that the finished text equals the API's answer for the same
request, and that the page shows tokens/s. Saves a screenshot (default
docs/images/playground.png). QUILL_BINARY defaults to target/release/quill.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver  # pinned: selenium==4.38.0
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

KEY = "playground-key"
PROMPT = "ROMEO:\n"
TOKENS = 1200


def main():
    checkpoint = sys.argv[1]
    quill = sys.argv[2] if len(sys.argv) > 2 else "target/release/quill"
    screenshot = sys.argv[3] if len(sys.argv) > 3 else "docs/images/playground.png"
    server = subprocess.Popen(
        [quill, "serve", "--checkpoint", checkpoint, "--port", "0", "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, QUILL_API_KEY=KEY))
    port = None
    for line in server.stderr:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if found:
            port = int(found.group(1))
            break
    assert port, "quill serve stopped before listening"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,860"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        assert browser.title == "quill playground", browser.title
        find = lambda id: browser.find_element(By.ID, id)
        key = find("key")
        assert key.is_displayed(), "the page asks for the key when the server has one"
        key.send_keys(KEY)
        for id, value in [("prompt", PROMPT), ("temperature", "0.8"), ("seed", "7"),
                          ("max_tokens", str(TOKENS)), ("top_k", "40")]:
            find(id).clear()
            find(id).send_keys(value)
        find("go").click()
        # Watch the text grow while the stream is open.
        lengths = []
        deadline = time.time() + 120
        while find("go").get_attribute("disabled") and time.time() < deadline:
            lengths.append(len(find("output").text))
            time.sleep(0.02)
        text = find("output").text
        growing = sorted(set(lengths))
        print(f"the text grew through {len(growing)} lengths while streaming")
        assert len(growing) >= 3, lengths
        stats = find("stats").text
        print(f"stats: {stats}")
        assert re.search(r"\d+ tokens · [\d.]+ tokens/s", stats), stats

        request = json.dumps({"model": checkpoint, "prompt": PROMPT, "max_tokens": TOKENS,
                              "temperature": 0.8, "seed": 7, "top_k": 40}).encode()
        answer = json.load(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions", data=request,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})))
        # The page shows the prompt, then the completion (innerText trims the end).
        expected = PROMPT + answer["choices"][0]["text"]
        assert text.rstrip() == expected.rstrip(), (text, expected)
        assert f"{answer['usage']['completion_tokens']} tokens" in stats, stats
        print("the page's text equals the API's completion for the same request")
        os.makedirs(os.path.dirname(screenshot) or ".", exist_ok=True)
        browser.save_screenshot(screenshot)
        print(f"screenshot: {screenshot}")
    finally:
        browser.quit()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
