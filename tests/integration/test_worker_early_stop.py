"""A gunicorn worker SIGTERMed the moment it is forked stops (services/web/early_stop.py), in both
configurations.

Until gunicorn installs a worker's own handlers, after our post_fork hook, the worker has its master's:
a SIGTERM then only queued in the worker's copy of the master's queue, and the worker loaded the app and
served on (5 times in 5 without the fix). A supervisord group stop, or a master stopping its workers,
that came in that moment cost the master's whole `graceful_timeout` and a SIGKILL.

Each case runs gunicorn alone, as the stack runs it (the real config file, the real app), one worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import eventually
from tracehop.stack.config import free_port
from tracehop.stack.processes import children, process_exists

REPO_ROOT = Path(__file__).resolve().parents[2]
USERS = ("services/web/gunicorn_conf.py", "users", "services.users:create_app()")
GATEWAY = ("services/web/gunicorn_public_conf.py", "gateway", "services.gateway:create_app()")


@pytest.mark.parametrize("config", [USERS, GATEWAY], ids=["users-gthread", "gateway-public-door"])
def test_a_worker_sigtermed_as_it_is_forked_stops(tmp_path: Path, config: tuple[str, str, str]) -> None:
    conf, service, app = config
    (tmp_path / "prom").mkdir()
    env = {
        **os.environ,
        "GUNICORN_WORKERS": "1",
        "TRACEHOP_LOG_DIR": str(tmp_path / "logs"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nobody: spans dropped
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    command = [
        *(sys.executable, "-m", "gunicorn", "-c", conf, "-b", f"127.0.0.1:{free_port()}"),
        *("--env", f"OTEL_SERVICE_NAME={service}", app),
    ]
    with (tmp_path / "gunicorn.out").open("wb") as output:
        master = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        # Polled as fast as we can: the worker is in its master's handlers for tens of ms.
        (worker,) = eventually(lambda: children(master.pid)[:1], 60, "a worker forked", interval=0.0005)
        os.kill(worker, signal.SIGTERM)
        eventually(lambda: not process_exists(worker), 15, f"worker {worker} gone after its SIGTERM")
    finally:
        master.send_signal(signal.SIGQUIT)
        master.wait(timeout=30)
