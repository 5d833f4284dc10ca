"""Take the README's screenshots of the trace viewer (docs/images/viewer-*.png) with Playwright.

    .venv/bin/python tools/viewer_screenshots.py

Starts a private local stack on free ports in a temporary directory (never the one `make up` runs), sends
`make traffic`'s mix of requests plus a few with a tenant in their baggage and one failing on purpose, then
photographs the search page, a trace with a span opened and the service map in headless Chromium.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright
from rich.console import Console

from tracehop.stack.config import free_ports
from tracehop.stack.runner import LocalStack
from tracehop.traces.query import TraceQuery
from tracehop.traffic import run_fault_traffic, run_traffic

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1440, "height": 900}


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="tracehop-screenshots-"))
    names = ("gateway", "users", "worker_metrics", "worker_b_metrics", "otlp", "query", "prometheus", "redis")
    stack = LocalStack(
        root / "var",
        root / "logs",
        dict(zip(names, free_ports(len(names)), strict=True)),
        {
            "TRACEHOP_FAULT_INJECTION": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "TRACEHOP_MAIL_LATENCY_MS": "15",
            "TRACEHOP_BEAT_INTERVAL_S": "3",
        },
    )
    stack.start(timeout=180)
    try:
        console = Console(quiet=True)
        gateway, viewer = stack.urls["gateway"], stack.urls["query"]
        records = run_traffic(gateway, 24, console, seed=3)
        http = requests.Session()
        http.trust_env = False
        for _ in range(3):
            http.post(
                f"{gateway}/api/users",
                json={"name": "Grace Hopper", "email": "grace@example.org"},
                headers={"baggage": "tracehop.tenant=acme"},
                timeout=10,
            )
        run_fault_traffic(gateway, console, seed=4)  # slow and failing requests: errors to show
        time.sleep(4)  # the worker's jobs finish and the batch processors flush
        create = next(
            r for r in reversed(records) if r.method == "POST" and r.path == "/api/users" and r.trace_id
        )
        spans = TraceQuery(viewer).wait_for_trace(create.trace_id, until=lambda s: len(s) >= 11, timeout=30)
        users_server = next(s for s in spans if s.service == "users" and s.kind == "SERVER")
        chromium = shutil.which("chromium")
        if chromium is None:
            raise SystemExit("no chromium on PATH: apt-get install chromium")
        IMAGES.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.goto(f"{viewer}/?lookback=15m&limit=12")
            page.screenshot(path=IMAGES / "viewer-search.png")
            page.goto(f"{viewer}/trace/{create.trace_id}")
            page.click(f"#span-{users_server.span_id}")
            page.wait_for_selector(f"#detail-{users_server.span_id}", state="visible")
            page.screenshot(path=IMAGES / "viewer-trace.png", full_page=True)
            page.goto(f"{viewer}/services?lookback=15m")
            page.screenshot(path=IMAGES / "viewer-services.png")
            browser.close()
        print("\n".join(str(path) for path in sorted(IMAGES.glob("viewer-*.png"))))
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
