"""gunicorn configuration shared by the gateway and users services.

    gunicorn -c services/web/gunicorn_conf.py -b 127.0.0.1:8080 --env OTEL_SERVICE_NAME=gateway \
        'services.gateway:create_app()'

Telemetry is set up in each worker AFTER the fork (post_fork) and flushed when the worker exits
(worker_exit); the Prometheus multiprocess files of a dead worker are marked dead (child_exit). Once the
app is loaded (post_worker_init) the worker freezes its startup heap, so that full garbage collections
stop walking it (services/web/heap.py). Loading this file must set up no tracing
(tests/integration/test_compose_start.py checks it).
"""

import sys
import tempfile

from services.web import settings

# prometheus_client decides at import time whether it runs in multiprocess mode, so the directory must
# exist in the environment before anything imports it. The stack runner and compose set it; a plain
# `gunicorn -c …` run gets a private temporary one.
if not settings.prometheus_multiproc_dir():
    settings.use_prometheus_multiproc_dir(tempfile.mkdtemp(prefix="tracehop-prom-"))

from services.metrics import multiprocess
from services.metrics.span_export_metrics import CountingSpanExporter
from services.telemetry import gunicorn_hooks
from services.web import early_stop, heap
from services.web.worker_listeners import ListensWhenReady

# gthread: a few threads per process serve I/O-bound requests (the gateway waits on users and Redis)
# without the memory of more processes. Both are tunable without editing this file.
worker_class = "services.web.gunicorn_worker.OrphanTolerantThreadWorker"  # gthread, see that module
workers = settings.env_int("GUNICORN_WORKERS", 2)
threads = settings.env_int("GUNICORN_THREADS", 4)
# Longer than any client's idle pool timeout, so a pooled connection is not closed just as it is reused
# (gunicorn's default of 2 s caused exactly that race in a first measurement).
keepalive = settings.env_int("GUNICORN_KEEPALIVE", 75)
graceful_timeout = 10
timeout = 30
accesslog = None  # the app writes one JSON access line per request itself, inside the request's span
# gunicorn's control socket defaults to one path per user: two services on one host would fight over it.
control_socket_disable = True
# A master killed outright (SIGKILL, OOM) leaves its workers running, holding the port: without SO_REUSEPORT
# the master supervisord starts next failed with "Connection in use" (two failed restarts, 11 s of 503 in
# the report of issue 14). With it gunicorn gives each worker a listening socket of its own, so the new
# master's workers listen beside the orphans, which serve on until one of them does (orphan_watch.py).
# Our workers open that socket only once they accept (worker_listeners.py).
reuse_port = True


# gunicorn's own messages (boot, worker exits, errors) as JSON lines in the service's log.
logger_class = gunicorn_hooks.LoguruLogger


def on_starting(server):
    # Before the master has a signal handler or a worker: a stop supervisord sent while it still forked and
    # exec'd us never arrived (early_stop.py). Leave as a SIGTERM would have made us leave.
    if early_stop.supervisord_asked_to_stop():
        server.log.info("supervisord asked to stop this master before it started: exiting")
        sys.exit(0)
    # Values left by a previous run's processes would be summed into this run's metrics.
    multiprocess.reset_directory()


def post_fork(server, worker):
    leave_if_stopped_already(server)
    withdraw_listeners_until_ready(worker)
    start_telemetry(worker)


def post_worker_init(worker):
    # The app is loaded now (gunicorn calls this after load_wsgi), tracing since post_fork.
    heap.freeze_startup_heap()


def start_telemetry(worker):
    # Counted, so that spans lost while the backend is down show in /metrics (span_export_metrics.py).
    gunicorn_hooks.post_fork(None, worker, wrap_exporter=CountingSpanExporter)


def leave_if_stopped_already(server):
    # Before anything else: a SIGTERM since the fork went to the master's handler we inherited
    # (early_stop.py). gunicorn's finally still runs worker_exit.
    if early_stop.worker_stopped_before_its_handlers(server):
        sys.exit(0)


def withdraw_listeners_until_ready(worker):
    # First thing after the fork: gunicorn opened this worker's listener a moment ago, before the app is
    # loaded; our workers open it again when they accept (worker_listeners.py). Other worker classes
    # (TRACEHOP_GATEWAY_WORKER_CLASS=gthread for tools/door_compare.py) keep gunicorn's.
    if isinstance(worker, ListensWhenReady):
        worker.withdraw_listeners()


def worker_exit(server, worker):
    gunicorn_hooks.worker_exit(server, worker)


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
