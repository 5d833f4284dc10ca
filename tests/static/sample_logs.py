"""Writes logs/<service>.log lines the way the services write them, for the static log-pipeline checks.

    python -m tests.static.sample_logs <log_dir>

Runs in a process of its own (configure_logging takes over loguru and stdlib logging for the process):
each service's real logging setup, the real code that writes each kind of line (the access line of a
request to the real app, a job's domain lines inside its span, a library's stdlib line outside any span),
with an in-memory tracer provider so the lines carry real trace and span ids. No network, no Redis.
"""

from __future__ import annotations

import logging
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider


def write_sample_logs() -> None:
    os.environ["TRACEHOP_MAIL_LATENCY_MS"] = "0"
    trace.set_tracer_provider(TracerProvider())
    from services.clients.users_client import SERVICE_TOKEN_HEADER
    from services.gateway import create_app as create_gateway
    from services.telemetry.logs import configure_logging
    from services.users import create_app as create_users
    from services.web import settings
    from services.worker.mail import deliver_welcome_email

    # The access line ("request") of each Flask service, written by its own app for a real request (one
    # refused before it needs users or Redis), and a gunicorn line outside any request.
    requests = {
        "gateway": (create_gateway, "/api/users", {}),
        "users": (create_users, "/users", {SERVICE_TOKEN_HEADER: settings.service_token()}),
    }
    for service, (create_app, path, headers) in requests.items():
        configure_logging(service)
        response = create_app().test_client().post(path, json={"name": ""}, headers=headers)
        assert response.status_code == 400, response.get_data(as_text=True)
        logging.getLogger("gunicorn.error").info("Booting worker with pid: %s", os.getpid())
    # The worker's lines: a job's domain lines inside the job's span, a Celery line outside any span.
    configure_logging("worker")
    with trace.get_tracer("sample").start_as_current_span("run/send_welcome_email"):
        deliver_welcome_email(7, "example.org", attempt=0)
    logging.getLogger("celery.apps.worker").warning("worker ready")


if __name__ == "__main__":
    os.environ["TRACEHOP_LOG_DIR"] = sys.argv[1]
    write_sample_logs()
