"""Reading configuration from environment variables: the one way tracehop services are configured.

OpenTelemetry's own `OTEL_*` variables are read by the SDK itself; this module covers the rest
(`TRACEHOP_*`, `REDIS_URL`, …), each with a default that works for the local stack.
"""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    """The variable's value, or `default` when it is unset or empty."""
    return os.environ.get(name) or default


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


def redis_url() -> str:
    return env_str("REDIS_URL", "redis://127.0.0.1:6379/0")


def broker_url() -> str:
    """Celery's broker: the same Redis unless CELERY_BROKER_URL names another (e.g. RabbitMQ)."""
    return env_str("CELERY_BROKER_URL", redis_url())


def users_url() -> str:
    return env_str("TRACEHOP_USERS_URL", "http://127.0.0.1:8081").rstrip("/")


def service_token() -> str:
    return env_str("TRACEHOP_SERVICE_TOKEN", "dev-service-token")


def log_dir() -> str:
    return env_str("TRACEHOP_LOG_DIR", "logs")


def deployment_environment() -> str:
    return env_str("TRACEHOP_ENV", "local")


def tracing_disabled() -> bool:
    """OTEL_SDK_DISABLED, read the way the SDK reads it, so 'off' means no instrumentation at all."""
    return env_bool("OTEL_SDK_DISABLED", False)


TRACING_SETUPS = ("tracehop", "stock")


def tracing_setup() -> str:
    """TRACEHOP_TRACING_SETUP: `tracehop` (as shipped) or `stock`, OpenTelemetry's documented setup with
    the SDK's defaults and none of tracehop's additions; `make bench` measures both (docs/performance.md)."""
    value = env_str("TRACEHOP_TRACING_SETUP", "tracehop").strip().lower()
    if value not in TRACING_SETUPS:
        raise ValueError(f"TRACEHOP_TRACING_SETUP must be one of {', '.join(TRACING_SETUPS)}, got {value!r}")
    return value
