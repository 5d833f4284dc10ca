"""gunicorn configuration of the public door: the gateway. Everything of gunicorn_conf.py, plus the worker
that holds against slow clients (services/web/public_door.py, limits in services/web/door_limits.py).

    gunicorn -c services/web/gunicorn_public_conf.py -b 127.0.0.1:8080 --env OTEL_SERVICE_NAME=gateway \
        'services.gateway:create_app()'

The users service stays on gthread (gunicorn_conf.py): only the gateway talks to it.
"""

from services.web.gunicorn_conf import *  # noqa: F403 - this file is gunicorn_conf.py with a different worker
from services.web.gunicorn_conf import post_fork as _shared_post_fork

worker_class = "services.web.public_door.PublicDoorWorker"
# gevent's workers count connections, not threads: this is the connection limit (plus the refusal
# headroom, set by the worker itself), read from TRACEHOP_MAX_CONNECTIONS.
threads = 1


def post_fork(server, worker):  # noqa: ANN001
    # Telemetry starts in post_worker_init instead: gevent patches threading and sockets only after the
    # fork, and the span processor's thread and its exporter's connection must be gevent's.
    pass


def post_worker_init(worker):  # noqa: ANN001
    _shared_post_fork(None, worker)
