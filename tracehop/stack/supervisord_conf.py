"""The programs of the embedded local stack and the supervisord.conf that runs them.

Each program is started exactly as the contract says (the Dockerfile uses the same commands), from the
repository root, with its output in $TRACEHOP_VAR_DIR/<program>.out.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.web import settings
from tracehop.stack.config import StackLayout, StackPorts
from tracehop.stack.prometheus_config import load_prometheus_config, retention_time
from tracehop.stack.worker_programs import WorkerProgram, split_pool

GUNICORN_CONF = "services/web/gunicorn_conf.py"
# Redis is the job queue and the job ledger: a job the gateway answered 201 for must survive a Redis crash.
# `appendfsync always` writes AND fsyncs the append-only file before Redis replies. `everysec` is not
# enough even for a process crash: while its background fsync is slow (a busy disk), Redis postpones
# writing the file for up to 2 s but keeps replying, so a SIGKILL loses writes it acknowledged
# (tests/unit/test_redis_durability.py). Cost, measured: ~0.2 ms more per write (LPUSH, one client: 4000/s
# instead of 20 000/s; eight clients: 16 700/s instead of 40 000/s) — the stack needs ~1000/s at 40 req/s.
REDIS_DURABILITY_ARGS = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")
# The gateway is the public door: the same configuration with a worker that holds against slow clients.
GUNICORN_CONF_BY_SERVICE = {"gateway": "services/web/gunicorn_public_conf.py", "users": GUNICORN_CONF}

# The worker's execution pool (`celery worker --pool`); services/telemetry/celery.py says what each one
# changes for tracing. eventlet is not offered: deprecated upstream, and not among our dependencies.
WORKER_POOL_VARIABLE = "TRACEHOP_WORKER_POOL"
WORKER_POOLS = ("prefork", "threads", "solo", "gevent")


def worker_pool(environ: Mapping[str, str]) -> str:
    """TRACEHOP_WORKER_POOL, checked: a typo must not start a stack whose worker never comes up."""
    pool = environ.get(WORKER_POOL_VARIABLE, "").strip() or "prefork"
    if pool not in WORKER_POOLS:
        raise ValueError(f"{WORKER_POOL_VARIABLE}={pool!r}: choose one of {', '.join(WORKER_POOLS)}")
    return pool


@dataclass(frozen=True)
class Program:
    """One process supervisord keeps running."""

    name: str
    command: Sequence[str]
    environment: Mapping[str, str] = field(default_factory=dict)
    # Lower starts first and stops last; supervisord does not wait between starts, readiness does.
    priority: int = 100
    # Long enough for gunicorn and celery to finish in-flight work and flush their spans.
    stopwaitsecs: int = 20
    # A process must stay up this long to count as started (RUNNING); one that exits sooner is a failed
    # start, and a crash loop ends in FATAL.
    startsecs: int = 2


def build_programs(
    layout: StackLayout,
    ports: StackPorts,
    service_env: Mapping[str, str],
    redis_binary: Path | None,
    prometheus_binary: str | None,
    python: str = sys.executable,
    beat: bool = True,
    worker_pool: str = "prefork",
    workers: Sequence[WorkerProgram] = tuple(split_pool(settings.DEFAULT_WORKER_CONCURRENCY)),
) -> list[Program]:
    """The stack's programs. No redis without `redis_binary` (REDIS_URL given), no prometheus without
    `prometheus_binary` (none on PATH), no celery beat with `beat=False`; one program per worker node."""
    programs: list[Program] = []
    if redis_binary is not None:
        if ports.redis is None:
            raise ValueError("an embedded redis needs a port")
        programs.append(
            Program(
                name="redis",
                command=[
                    str(redis_binary),
                    *("--port", str(ports.redis), "--bind", "127.0.0.1"),
                    *REDIS_DURABILITY_ARGS,
                    *("--dir", str(layout.redis_dir)),
                ],
                priority=10,
                stopwaitsecs=10,
            )
        )
    programs.append(
        Program(
            name="trace-store",
            command=[
                python,
                *("-m", "tracehop", "trace-store"),
                *("--otlp-port", str(ports.otlp), "--query-port", str(ports.query)),
                *("--db", str(layout.traces_db)),
                *("--log-dir", str(layout.log_dir)),
                *(("--prometheus-url", f"http://127.0.0.1:{ports.prometheus}") if prometheus_binary else ()),
            ],
            priority=20,
            stopwaitsecs=10,
            # It answers its API after ~0.25 s of CPU (docs/reliability.md): restarted after a crash, it
            # need not wait 2 s to count as started. A real failure (port taken, bad retention setting)
            # exits within 1 s unless the machine is very busy, and ends in FATAL; if it is slower, `up`
            # still fails on the readiness probe, with the program's output.
            startsecs=1,
        )
    )
    for name, port, priority in (("users", ports.users, 30), ("gateway", ports.gateway, 50)):
        programs.append(
            Program(
                name=name,
                command=[
                    python,
                    *("-m", "gunicorn", "-c", GUNICORN_CONF_BY_SERVICE[name], "-b", f"127.0.0.1:{port}"),
                    *("--env", f"OTEL_SERVICE_NAME={name}", f"services.{name}:create_app()"),
                ],
                environment={**service_env, **_per_service_env(layout, name)},
                priority=priority,
            )
        )
    # The worker service: one program per Celery node, each with its share of the pool, its own /metrics
    # port and multiprocess directory (worker_programs.py says why two).
    metrics_ports = {"worker": ports.worker_metrics, "worker-b": ports.worker_b_metrics}
    for worker in workers:
        programs.append(
            Program(
                name=worker.name,
                command=[
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "services.worker.celery_app",
                    "worker",
                    *("--loglevel", "INFO"),
                    # On the command line, not in the configuration: Celery monkey-patches for gevent only
                    # when `--pool gevent` is in argv, before it imports anything else.
                    *("--pool", worker_pool),
                    *("-n", worker.node_name),
                ],
                environment={
                    **service_env,
                    **_per_service_env(layout, "worker"),
                    "PROMETHEUS_MULTIPROC_DIR": str(layout.multiproc_dir(worker.name)),
                    "TRACEHOP_WORKER_METRICS_PORT": str(metrics_ports[worker.name]),
                    "TRACEHOP_WORKER_CONCURRENCY": str(worker.concurrency),
                },
                priority=40,
            )
        )
    if beat:
        programs.append(
            Program(
                name="beat",
                # `celery -A services.worker.celery_app beat`, without Celery's command line (~0.08 s of
                # CPU sooner back after a crash: services/worker/beat.py). The schedule file keeps the last
                # run of each periodic job, under var/ like all state.
                command=[
                    python,
                    *("-m", "services.worker.beat", "--loglevel", "INFO"),
                    *("--schedule", str(layout.beat_schedule)),
                ],
                # Its own service name: the trace of a scheduled job starts with beat's PRODUCER span.
                environment={**service_env, "OTEL_SERVICE_NAME": "beat"},
                priority=45,
                stopwaitsecs=10,
                # Its readiness is its ready marker (services/worker/beat_ready.py), not supervisord's
                # RUNNING: 1 s is enough to tell a crash at start (an import error exits within ~1.5 s of
                # CPU; if later, `up` still fails on the probe, with beat's output) and lets `status` call
                # a restarted beat ready as soon as it has loaded its schedule (~1 s, docs/reliability.md).
                startsecs=1,
            )
        )
    if prometheus_binary is not None:
        programs.append(
            Program(
                name="prometheus",
                command=[
                    prometheus_binary,
                    f"--config.file={layout.prometheus_config}",
                    f"--web.listen-address=127.0.0.1:{ports.prometheus}",
                    f"--storage.tsdb.path={layout.prometheus_dir}",
                    "--enable-feature=exemplar-storage",
                    # The shared file's value: Debian's Prometheus 2.42 reads retention only as a flag.
                    f"--storage.tsdb.retention.time={retention_time(load_prometheus_config())}",
                ],
                priority=60,
                stopwaitsecs=10,
            )
        )
    return sorted(programs, key=lambda program: program.priority)


def _per_service_env(layout: StackLayout, service: str) -> dict[str, str]:
    return {
        "OTEL_SERVICE_NAME": service,
        "PROMETHEUS_MULTIPROC_DIR": str(layout.multiproc_dir(service)),
    }


def render_supervisord_conf(programs: Sequence[Program], layout: StackLayout) -> str:
    """The text of supervisord.conf: a daemon with a private unix socket and one section per program."""
    socket_path = _value(layout.supervisor_socket)
    lines = [
        "; Generated by `python -m tracehop up` (tracehop/stack/supervisord_conf.py), anew at each `up`.",
        "[supervisord]",
        "identifier=tracehop",
        f"pidfile={_value(layout.supervisord_pidfile)}",
        f"logfile={_value(layout.supervisord_log)}",
        "logfile_maxbytes=5MB",
        "logfile_backups=1",
        f"childlogdir={_value(layout.var_dir)}",
        "nodaemon=false",
        "",
        "[unix_http_server]",
        f"file={socket_path}",
        # Owner only: whoever can talk to the socket can start and stop programs.
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{socket_path}",
    ]
    for program in programs:
        lines += [
            "",
            f"[program:{program.name}]",
            f"command={_value(shlex.join(program.command))}",
            f"directory={_value(layout.repo_root)}",
            f"priority={program.priority}",
            "autostart=true",
            "autorestart=true",
            f"startsecs={program.startsecs}",
            "startretries=3",
            # gunicorn and celery fork workers: signal the whole process group so none is orphaned.
            "stopasgroup=true",
            "killasgroup=true",
            f"stopwaitsecs={program.stopwaitsecs}",
            "redirect_stderr=true",
            f"stdout_logfile={_value(layout.program_output(program.name))}",
            "stdout_logfile_maxbytes=10MB",
            "stdout_logfile_backups=1",
        ]
        if program.environment:
            lines.append(f"environment={_environment(program.environment)}")
    return "\n".join(lines) + "\n"


def _value(raw: object) -> str:
    """A value for supervisord.conf: supervisord expands %(name)s in values, so a literal % doubles."""
    text = str(raw)
    if "\n" in text:
        raise ValueError(f"supervisord.conf values cannot contain a newline: {text!r}")
    return text.replace("%", "%%")


def _environment(env: Mapping[str, str]) -> str:
    """KEY="value",... as supervisord parses it (shlex without escapes: a value cannot hold a `"`)."""
    pairs = []
    for key, value in env.items():
        if '"' in value or "\n" in value:
            raise ValueError(f"{key} contains a double quote or newline, which supervisord.conf cannot pass")
        pairs.append(f'{key}="{_value(value)}"')
    return ",".join(pairs)
