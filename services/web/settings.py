"""Reading configuration from environment variables: the one way tracehop services are configured.

OpenTelemetry's own `OTEL_*` variables are read by the SDK itself; this module covers the rest
(`TRACEHOP_*`, `REDIS_URL`, …), each with a default that works for the local stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable's value (in `environ`, default the process's environment), or `default` when it is
    unset or empty."""
    return (os.environ if environ is None else environ).get(name) or default


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {name} must be true or false, got {raw!r}")


# The services of the stack, and the ports they listen on unless told otherwise. The stack runner, the
# bench and the tests take them from here.
SERVICES = ("gateway", "users", "worker")
DEFAULT_PORTS = {"gateway": 8080, "users": 8081, "worker_metrics": 9101}
# The worker service's pool size (TRACEHOP_WORKER_CONCURRENCY) when none is set; the local stack splits it
# over its two worker programs (tracehop/stack/worker_programs.py).
DEFAULT_WORKER_CONCURRENCY = 2
LOCALHOST = "127.0.0.1"


def redis_url() -> str:
    return env_str("REDIS_URL", "redis://127.0.0.1:6379/0")


def broker_url() -> str:
    """Celery's broker: the same Redis unless CELERY_BROKER_URL names another (e.g. RabbitMQ)."""
    return env_str("CELERY_BROKER_URL", redis_url())


def users_url() -> str:
    default = f"http://{LOCALHOST}:{DEFAULT_PORTS['users']}"
    return env_str("TRACEHOP_USERS_URL", default).rstrip("/")


def users_timeout_s() -> float:
    return env_float("TRACEHOP_USERS_TIMEOUT", 3.0)


def service_token() -> str:
    return env_str("TRACEHOP_SERVICE_TOKEN", "dev-service-token")


def service_name(default: str = "tracehop") -> str:
    """OTEL_SERVICE_NAME: what a gunicorn worker calls itself (gunicorn applies `--env` after the config)."""
    return env_str("OTEL_SERVICE_NAME", default)


def log_dir(environ: Mapping[str, str] | None = None) -> str:
    """TRACEHOP_LOG_DIR: where each service writes <service>.log (and where `make logs` reads them)."""
    return env_str("TRACEHOP_LOG_DIR", "logs", environ)


def log_level() -> str:
    return env_str("TRACEHOP_LOG_LEVEL", "INFO").upper()


def log_span_events() -> bool:
    """TRACEHOP_LOG_SPAN_EVENTS: each log line written inside a span also becomes an event of that span."""
    return env_bool("TRACEHOP_LOG_SPAN_EVENTS", True)


def gc_freeze() -> bool:
    """TRACEHOP_GC_FREEZE (default true): a gunicorn worker freezes its startup heap once the app is loaded,
    so full garbage collections stop walking it (services/web/heap.py)."""
    return env_bool("TRACEHOP_GC_FREEZE", True)


def gc_gen0_threshold() -> int | None:
    """TRACEHOP_GC_GEN0_THRESHOLD: generation 0's threshold in a gunicorn worker (unset or 0: Python's)."""
    value = env_int("TRACEHOP_GC_GEN0_THRESHOLD", 0)
    if value < 0:
        raise ValueError(f"TRACEHOP_GC_GEN0_THRESHOLD must be 0 (Python's default) or more, got {value}")
    return value or None


def deployment_environment() -> str:
    return env_str("TRACEHOP_ENV", "local")


def tracing_disabled() -> bool:
    """OTEL_SDK_DISABLED, read the way the SDK reads it, so 'off' means no instrumentation at all."""
    return env_bool("OTEL_SDK_DISABLED", False)


def orphan_grace_s() -> float:
    """How long a gunicorn worker whose master died may serve on at most (services/web/orphan_watch.py)."""
    return env_float("TRACEHOP_ORPHAN_GRACE_S", 60.0)


def prometheus_multiproc_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR: where the processes of one service write their metrics (None: in memory).

    prometheus_client reads it itself when first imported, so whoever sets it must do so before that.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def use_prometheus_multiproc_dir(directory: str) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def gateway_config() -> dict[str, object]:
    """The gateway's settings, as `create_app` puts them in `app.config` (a test passes its own)."""
    return {
        "USERS_URL": users_url(),
        "USERS_TIMEOUT_S": users_timeout_s(),
        "SERVICE_TOKEN": service_token(),
        "REDIS_URL": redis_url(),
        "TRACECONTEXT_TEST": env_bool("TRACEHOP_TRACECONTEXT_TEST", False),
        "TRUST_INCOMING_TRACE": env_bool("TRACEHOP_TRUST_INCOMING_TRACE", True),
        "BAGGAGE_ALLOWLIST": env_str("TRACEHOP_BAGGAGE_ALLOWLIST", "tracehop.*"),
        "BAGGAGE_MAX_BYTES": env_int("TRACEHOP_BAGGAGE_MAX_BYTES", 1024),
    }


def users_config() -> dict[str, object]:
    """The users service's settings, as its `create_app` puts them in `app.config`."""
    return {"REDIS_URL": redis_url(), "SERVICE_TOKEN": service_token()}


def worker_config() -> dict[str, object]:
    """The worker's settings, as Celery configuration keys (read when Celery first needs them)."""
    return {
        "broker_url": broker_url(),
        "result_backend": redis_url(),
        "visibility_timeout_s": env_int("TRACEHOP_VISIBILITY_TIMEOUT_S", 3600),
        "worker_concurrency": env_int("TRACEHOP_WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY),
        "task_default_queue": env_str("TRACEHOP_CELERY_QUEUE", "celery"),
        "beat_interval_s": env_float("TRACEHOP_BEAT_INTERVAL_S", 60.0),
        # Tests shorten the poison job's life with a smaller number.
        "mail_max_retries": env_int("TRACEHOP_MAIL_MAX_RETRIES", 5),
        "metrics_port": env_int("TRACEHOP_WORKER_METRICS_PORT", DEFAULT_PORTS["worker_metrics"]),
        "metrics_addr": env_str("TRACEHOP_WORKER_METRICS_ADDR", LOCALHOST),
    }


TRACING_SETUPS = ("tracehop", "stock")


def lean_tracer() -> bool:
    """TRACEHOP_LEAN_TRACER (default true): tracehop's setup creates spans with LeanTracerProvider, the
    SDK's provider with cheaper hot paths (services/telemetry/lean_tracer.py); false: the SDK's own."""
    return env_bool("TRACEHOP_LEAN_TRACER", True)


def lean_instrumentation() -> bool:
    """TRACEHOP_LEAN_INSTRUMENTATION (default true): in tracehop's setup, the stock instrumentations' per-
    request attribute work is done once where it is repeated (services/telemetry/flask_request_attributes.py,
    flask_request_url.py, requests_client_attributes.py and redis_connection_attributes.py, each proven
    equal to the stock instrumentation); false: the instrumentations' own."""
    return env_bool("TRACEHOP_LEAN_INSTRUMENTATION", True) and tracing_setup() != "stock"


def tracing_setup() -> str:
    """TRACEHOP_TRACING_SETUP: `tracehop` (as shipped) or `stock`, OpenTelemetry's documented setup with
    the SDK's defaults and none of tracehop's additions; `make bench` measures both (docs/performance.md)."""
    value = env_str("TRACEHOP_TRACING_SETUP", "tracehop").strip().lower()
    if value not in TRACING_SETUPS:
        raise ValueError(f"TRACEHOP_TRACING_SETUP must be one of {', '.join(TRACING_SETUPS)}, got {value!r}")
    return value
