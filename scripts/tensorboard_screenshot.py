#!/usr/bin/env python3
"""TensorBoard on quill's runs, looked at in headless Chromium, once.

    pip install "tensorboard==2.20.0" "setuptools==75.8.0" "selenium==4.38.0"  # tensorboard imports pkg_resources
    apt-get install chromium chromium-driver
    python3 scripts/tensorboard_screenshot.py LOGDIR [SCREENSHOT]

Starts `tensorboard --logdir LOGDIR` on a free loopback port, opens its scalars
dashboard, waits until the charts of quill's tags (train/loss, eval/val_loss, …) are
drawn, checks that every run directory of LOGDIR is listed, and saves a screenshot
(default docs/images/tensorboard.png).
"""

import os
import socket
import subprocess
import sys
import time

import tensorboard  # pinned: tensorboard==2.20.0
from selenium import webdriver  # pinned: selenium==4.38.0
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

assert tensorboard.__version__ == "2.20.0", tensorboard.__version__


def main():
    logdir = sys.argv[1]
    screenshot = sys.argv[2] if len(sys.argv) > 2 else "docs/images/tensorboard.png"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "tensorboard did not start"
                time.sleep(0.5)
        browser.get(f"http://127.0.0.1:{port}/?darkMode=false#timeseries")
        runs = sorted(d for d in os.listdir(logdir) if os.path.isdir(os.path.join(logdir, d)))
        deadline = time.time() + 90
        while True:
            # A card's title breaks after its group: "train\n/loss".
            text = browser.find_element(By.TAG_NAME, "body").text.replace("\n/", "/")
            charts = browser.find_elements(By.CSS_SELECTOR, "canvas, svg")
            if all(r in text for r in runs) and "train/loss" in text and len(charts) >= 4:
                break
            assert time.time() < deadline, f"the dashboard never showed the runs: {text[:500]}"
            time.sleep(1)
        time.sleep(4)  # let the charts finish drawing
        for tag in ["train/loss", "train/lr", "eval/val_loss", "eval/train_loss"]:
            assert tag in text, f"{tag} missing"
        os.makedirs(os.path.dirname(screenshot) or ".", exist_ok=True)
        browser.save_screenshot(screenshot)
        print(f"tensorboard {tensorboard.__version__} shows runs {runs}; screenshot: {screenshot}")
    finally:
        browser.quit()
        board.terminate()
        board.wait(timeout=30)


if __name__ == "__main__":
    main()
