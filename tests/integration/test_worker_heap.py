"""A served gunicorn worker freezes its startup heap (services/web/heap.py), in both configurations.

Why it matters: without the freeze, every full garbage collection in a traced worker walks the whole
startup heap (Flask, OpenTelemetry, redis-py, …) with the interpreter lock held — 43–55 ms of CPU each,
measured by `python -m tracehop.bench.tail` — and that was the traced p99 at 100 req/s
(docs/performance.md, "The traced tail at 100 req/s"). The check is the collector's own count, not a
timing: what a full collection would walk in the worker that served the request.

Each case runs gunicorn alone, as the stack runs it (the real config file, the real app behind a
`/_heap` path: tests/integration/heap_app.py), one worker, tracing on, spans sent nowhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tracehop.stack.config import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
USERS = ("services/web/gunicorn_conf.py", "users", "tests.integration.heap_app:users_app()")
GATEWAY = ("services/web/gunicorn_public_conf.py", "gateway", "tests.integration.heap_app:gateway_app()")


def served_heap(tmp_path: Path, config: tuple[str, str, str], extra_env: dict[str, str]) -> dict:
    conf, service, app = config
    (tmp_path / "prom").mkdir()
    port = free_port()
    env = {
        **os.environ,
        "GUNICORN_WORKERS": "1",
        "OTEL_SDK_DISABLED": "false",
        "TRACEHOP_LOG_DIR": str(tmp_path / "logs"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        # Nothing listens there: the few spans are dropped, which these checks do not look at.
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        **extra_env,
    }
    for name in ("TRACEHOP_GC_FREEZE", "TRACEHOP_GC_GEN0_THRESHOLD"):
        if name not in extra_env:
            env.pop(name, None)
    command = [
        *(sys.executable, "-m", "gunicorn", "-c", conf, "-b", f"127.0.0.1:{port}"),
        *("--env", f"OTEL_SERVICE_NAME={service}", app),
    ]
    with (tmp_path / "gunicorn.out").open("wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    return requests.get(f"http://127.0.0.1:{port}/_heap", timeout=2).json()
                except requests.RequestException:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    output.flush()
                    raise AssertionError(
                        f"gunicorn did not serve: {(tmp_path / 'gunicorn.out').read_text()[-2000:]}"
                    )
                time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.parametrize("config", [USERS, GATEWAY], ids=["users-gthread", "gateway-public-door"])
def test_served_worker_froze_its_startup_heap(tmp_path: Path, config: tuple[str, str, str]) -> None:
    heap = served_heap(tmp_path, config, {})
    # Flask, Werkzeug, the SDK and the instrumentations: well over 50,000 objects in either service.
    assert heap["frozen"] > 50_000, heap
    # What a full collection still walks: the little the worker made since (its first request's).
    assert heap["walked"] < heap["frozen"] / 5, heap
    assert heap["threshold"][0] == 700, heap  # Python's own, unless TRACEHOP_GC_GEN0_THRESHOLD says


def test_freeze_can_be_turned_off_and_gen0_threshold_set(tmp_path: Path) -> None:
    heap = served_heap(tmp_path, USERS, {"TRACEHOP_GC_FREEZE": "false", "TRACEHOP_GC_GEN0_THRESHOLD": "5000"})
    assert heap["frozen"] == 0, heap
    assert heap["walked"] > 50_000, heap  # the whole startup heap, walked by every full collection
    assert heap["threshold"][0] == 5000, heap
