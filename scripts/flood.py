#!/usr/bin/env python3
"""Holds N idle or half-header TCP connections to HOST:PORT (a stranger's flood, no
key needed), then reports the server's resident memory and whether a real request is
answered while they are open. Loopback only; standard library only.

    python3 scripts/flood.py --port 8000 --pid PID --count 15000 \
        --request 'POST /v1/completions' --body '{"prompt": "Speak", "max_tokens": 20}'
"""
import argparse
import json
import resource
import socket
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--request", default="GET /health")
    p.add_argument("--body", default="")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--hold", type=float, default=1.0)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kib(a.pid)
    held, refused = [], 0
    start = time.time()
    for i in range(a.count):
        s = socket.socket()
        s.setblocking(False)
        if s.connect_ex(("127.0.0.1", a.port)) not in (0, 115):  # 115: EINPROGRESS
            refused += 1
            s.close()
            continue
        held.append(s)
    opened = time.time() - start
    time.sleep(a.hold)
    for i, s in enumerate(held):
        if i % 2:
            try:
                s.send(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nX-a: ")
            except OSError:
                refused += 1
    during = rss_kib(a.pid)
    method, path = a.request.split(" ", 1)
    body = a.body.encode()
    headers = "".join(h + "\r\n" for h in a.header)
    real = socket.socket()
    real.settimeout(30)
    t = time.time()
    real.connect(("127.0.0.1", a.port))
    real.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = b""
    try:
        while chunk := real.recv(65536):
            answer += chunk
    except OSError as e:
        answer += f" ({e})".encode()
    took = time.time() - t
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    if not status.endswith("200 OK"):
        status += " " + answer[-300:].decode(errors="replace")
    print(json.dumps({
        "connections_opened": len(held), "connect_failures": refused,
        "seconds_to_open": round(opened, 2),
        "rss_kib_before": before, "rss_kib_during": during,
        "real_request": status, "real_request_seconds": round(took, 3),
    }))


if __name__ == "__main__":
    main()
