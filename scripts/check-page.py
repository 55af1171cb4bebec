#!/usr/bin/env python3
"""Loads the browser quickstart page (examples/web) in headless Chromium through ChromeDriver's
WebDriver protocol, waits for its result, checks it against PyTorch's BatchNorm1d semantics
computed here in float64, and saves a screenshot.

Usage: check-page.py SITE_DIR SCREENSHOT.png
SITE_DIR holds index.html and pkg/ (scripts/test-browser.sh builds it). Standard library only:
an HTTP server for the page, and ChromeDriver spoken to over HTTP.
Exit status 0 when the page's numbers are right; prints one PASS/FAIL line.
"""

import base64
import functools
import http.server
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

CHROME_ARGS = [
    "--headless=new",
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-angle=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1000,800",
]

# Elementwise outputs: the golden README's TOL, relative to the largest magnitude.
TOL = 1e-5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["value"]


def expected():
    """BatchNorm1d(3), defaults, on x = 1..12 as (4, 3): training forward, then eval."""
    x = [[float(3 * n + c + 1) for c in range(3)] for n in range(4)]
    eps, momentum = 1e-5, 0.1
    train, eval_, rm, rv = [], [], [], []
    for c in range(3):
        col = [x[n][c] for n in range(4)]
        mean = sum(col) / 4
        var = sum((v - mean) ** 2 for v in col) / 4
        unbiased = var * 4 / 3
        rm.append(momentum * mean)
        rv.append((1 - momentum) * 1.0 + momentum * unbiased)
        train.append([(v - mean) / math.sqrt(var + eps) for v in col])
        eval_.append([(v - rm[c]) / math.sqrt(rv[c] + eps) for v in col])
    flat = lambda per_c: [per_c[c][n] for n in range(4) for c in range(3)]
    return {"train": flat(train), "eval": flat(eval_), "running_mean": rm, "running_var": rv}


def compare(got, want):
    worst = 0.0
    for key, w in want.items():
        g = got.get(key)
        if g is None or len(g) != len(w):
            return f"{key}: got {g}, want {len(w)} values", math.inf
        scale = max(abs(v) for v in w) or 1.0
        worst = max(worst, max(abs(a - b) for a, b in zip(g, w)) / (TOL * scale))
    return None, worst


def main():
    site, shot = sys.argv[1], sys.argv[2]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=site)
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = f"http://localhost:{server.server_address[1]}/index.html"

    driver_port = free_port()
    driver = subprocess.Popen(
        [os.environ.get("CHROMEDRIVER", "chromedriver"), f"--port={driver_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{driver_port}"
    session = None
    try:
        for _ in range(100):
            try:
                request("GET", base + "/status")
                break
            except OSError:
                time.sleep(0.1)
        options = {"args": CHROME_ARGS}
        if os.path.exists("/usr/bin/chromium"):
            options["binary"] = "/usr/bin/chromium"
        session = request("POST", base + "/session", {
            "capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})["sessionId"]
        s = f"{base}/session/{session}"
        request("POST", s + "/url", {"url": page})
        status, text, data = "running", "", "{}"
        deadline = time.time() + 120
        while status == "running" and time.time() < deadline:
            time.sleep(0.5)
            status, text, data = request("POST", s + "/execute/sync", {
                "script": "const r = document.getElementById('result');"
                          "return [r.dataset.status, r.textContent, r.dataset.json || '{}'];",
                "args": []})
        with open(shot, "wb") as f:
            f.write(base64.b64decode(request("GET", s + "/screenshot")))
        print(text)
        if status != "done":
            print(f"FAIL page status {status!r} (screenshot {shot})")
            return 1
        problem, worst = compare(json.loads(data), expected())
        if problem or worst > 1.0:
            print(f"FAIL page results: {problem or ''} worst err/allowed {worst:.3e}")
            return 1
        print(f"PASS page results within tolerance: worst err/allowed {worst:.3e} "
              f"(screenshot {shot})")
        return 0
    finally:
        if session:
            try:
                request("DELETE", f"{base}/session/{session}")
            except OSError:
                pass
        driver.terminate()
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
