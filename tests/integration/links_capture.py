"""`make trace` in link mode (TRACEHOP_CELERY_SPAN_LINKS=1), captured from a real stack.

    .venv/bin/python -m tests.integration.links_capture

A private stack with span links on (free ports, a temporary directory), one `POST /api/users/<id>/report`,
then `python -m tracehop trace <id>` (what `make trace` runs) on the request's trace: its waterfall, then
the job's trace, which it reaches through the link. docs/context-propagation.md shows the output.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

from tests.integration.mistakes_capture import make_trace
from tests.integration.stack import SHAPES_ENV, private_stack


def main() -> None:
    env = {**SHAPES_ENV, "TRACEHOP_CELERY_SPAN_LINKS": "1"}
    with tempfile.TemporaryDirectory() as root, private_stack(Path(root), env) as stack:
        email = f"ada-{uuid.uuid4().hex[:6]}@example.org"
        user = stack.http.post(f"{stack.gateway}/api/users", json={"name": "Ada", "email": email}, timeout=30)
        report = stack.http.post(f"{stack.gateway}/api/users/{user.json()['user']['id']}/report", timeout=30)
        body = report.json()
        stack.wait_for_job(body["job_id"])
        time.sleep(2)  # the job's and users' last spans
        make_trace(stack.stack.urls["query"], body["trace_id"])


if __name__ == "__main__":
    main()
