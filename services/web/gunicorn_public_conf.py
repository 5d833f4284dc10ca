"""gunicorn configuration of the public door: the gateway. Everything of gunicorn_conf.py, plus the worker
that holds against slow clients (services/web/public_door.py, limits in services/web/door_limits.py).

    gunicorn -c services/web/gunicorn_public_conf.py -b 127.0.0.1:8080 --env OTEL_SERVICE_NAME=gateway \
        'services.gateway:create_app()'

The users service stays on gthread (gunicorn_conf.py): only the gateway talks to it.
"""

from services.web import heap, settings
from services.web.gunicorn_conf import *  # noqa: F403 - this file is gunicorn_conf.py with another worker
from services.web.gunicorn_conf import (
    leave_if_stopped_already,
    start_telemetry,
    withdraw_listeners_until_ready,
)

# TRACEHOP_GATEWAY_WORKER_CLASS=gthread brings back the old worker, for the comparison in
# tools/door_compare.py only: it has none of the limits, and eight slow clients stop it.
worker_class = settings.env_str("TRACEHOP_GATEWAY_WORKER_CLASS", "services.web.public_door.PublicDoorWorker")


def post_fork(server, worker):
    # Telemetry starts in post_worker_init instead: gevent patches threading and sockets only after the
    # fork, and the span processor's thread and its exporter's connection must be gevent's.
    leave_if_stopped_already(server)
    withdraw_listeners_until_ready(worker)


def post_worker_init(worker):
    start_telemetry(worker)
    heap.freeze_startup_heap()  # after telemetry: its modules and provider are startup heap too
