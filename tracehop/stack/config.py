"""Where the embedded local stack runs: ports, directories and the environment given to the services.

Everything is read from environment variables (the table in the README) so that `make up`, the
integration tests and a user's shell all describe a stack the same way; nothing here starts a process.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from services.web import settings
from services.worker.beat_ready import marker_path

LOCALHOST = settings.LOCALHOST

# The repository root: every process runs from here so that `services.*` and `tracehop` import.
REPO_ROOT = Path(__file__).resolve().parents[2]

# Environment variable naming each port, in the order the README lists them.
PORT_ENV_VARS: dict[str, str] = {
    "gateway": "TRACEHOP_GATEWAY_PORT",
    "users": "TRACEHOP_USERS_PORT",
    "worker_metrics": "TRACEHOP_WORKER_METRICS_PORT",
    "worker_b_metrics": "TRACEHOP_WORKER_B_METRICS_PORT",
    "otlp": "TRACEHOP_OTLP_PORT",
    "query": "TRACEHOP_QUERY_PORT",
    "prometheus": "TRACEHOP_PROMETHEUS_PORT",
}

# The services (each gets its own PROMETHEUS_MULTIPROC_DIR and OTEL_SERVICE_NAME) and their default ports:
# the services' own settings, so a default changes in one place.
SERVICES = settings.SERVICES


class StackConfigError(ValueError):
    """A setting of the local stack is invalid (bad port number, unusable path, ...)."""


# A unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux, 104 on macOS).
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class StackLayout:
    """The files of one local stack: state under `var_dir`, service logs under `log_dir`."""

    var_dir: Path
    log_dir: Path
    repo_root: Path = REPO_ROOT

    @property
    def supervisord_conf(self) -> Path:
        return self.var_dir / "supervisord.conf"

    @property
    def supervisord_pidfile(self) -> Path:
        return self.var_dir / "supervisord.pid"

    @property
    def supervisord_log(self) -> Path:
        return self.var_dir / "supervisord.log"

    @property
    def supervisor_socket(self) -> Path:
        return self.var_dir / "supervisor.sock"

    @property
    def state_file(self) -> Path:
        """What the last `up` started (ports, pids): read by `down`, `status` and `urls`."""
        return self.var_dir / "stack.json"

    @property
    def redis_port_file(self) -> Path:
        """The embedded Redis port chosen at the first `up`, so REDIS_URL stays the same."""
        return self.var_dir / "redis.port"

    @property
    def redis_dir(self) -> Path:
        return self.var_dir / "redis"

    @property
    def prometheus_dir(self) -> Path:
        return self.var_dir / "prometheus"

    @property
    def prometheus_config(self) -> Path:
        return self.var_dir / "prometheus.yml"

    @property
    def traces_db(self) -> Path:
        return self.var_dir / "traces.sqlite3"

    def program_output(self, program: str) -> Path:
        """stdout and stderr of one supervised program."""
        return self.var_dir / f"{program}.out"

    @property
    def beat_schedule(self) -> Path:
        """celery beat's schedule database (the dbm module may add a suffix such as `.db`)."""
        return self.var_dir / "celerybeat-schedule"

    @property
    def beat_ready_marker(self) -> Path:
        """Written by each beat process once it has loaded the schedule (services/worker/beat_ready.py)."""
        return marker_path(self.beat_schedule)

    def multiproc_dir(self, program: str) -> Path:
        """PROMETHEUS_MULTIPROC_DIR of one program (the gunicorn services: of their every process)."""
        return self.var_dir / f"prom-{program}"

    def check_socket_path(self) -> None:
        if len(str(self.supervisor_socket)) > MAX_SOCKET_PATH:
            raise StackConfigError(
                f"{self.supervisor_socket} is too long for a unix socket; use a shorter TRACEHOP_VAR_DIR"
            )


@dataclass(frozen=True)
class StackPorts:
    """The TCP ports of one local stack. `redis=None` means: pick a free port and remember it."""

    gateway: int = settings.DEFAULT_PORTS["gateway"]
    users: int = settings.DEFAULT_PORTS["users"]
    worker_metrics: int = settings.DEFAULT_PORTS["worker_metrics"]
    # The second worker program's /metrics (tracehop/stack/worker_programs.py); the services never read it.
    worker_b_metrics: int = 9102
    otlp: int = 4318
    query: int = 16686
    prometheus: int = 9090
    redis: int | None = None

    @classmethod
    def from_mapping(cls, ports: Mapping[str, int | None]) -> StackPorts:
        """Build from a dict such as {"gateway": 18080, ...}; missing keys keep their defaults."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(ports) - known)
        if unknown:
            raise StackConfigError(f"unknown port name(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(ports))

    def with_redis(self, port: int) -> StackPorts:
        return dataclasses.replace(self, redis=port)

    def as_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


def ports_from_env(environ: Mapping[str, str] | None = None) -> StackPorts:
    """Ports from TRACEHOP_*_PORT variables, defaults for the ones not set."""
    environ = os.environ if environ is None else environ
    chosen: dict[str, int] = {}
    for name, variable in PORT_ENV_VARS.items():
        raw = environ.get(variable, "").strip()
        if raw:
            chosen[name] = parse_port(raw, variable)
    return StackPorts.from_mapping(chosen)


def parse_port(raw: str, variable: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise StackConfigError(f"{variable} must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise StackConfigError(f"{variable} must be between 1 and 65535, got {port}")
    return port


def var_dir_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """$TRACEHOP_VAR_DIR (default `var`), absolute, relative paths taken from the current directory."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("TRACEHOP_VAR_DIR") or "var").absolute()


def last_traffic_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where `make traffic` saves its run and `make trace` (no id) reads its last create."""
    return var_dir_from_env(environ) / "last_traffic.json"


def log_dir_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """$TRACEHOP_LOG_DIR (default `logs`), absolute: the directory the services write to."""
    return Path(settings.log_dir(environ)).absolute()


def query_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """Base URL of the trace query API: $TRACEHOP_QUERY_URL, else the local trace store's port."""
    return _url_from_env("TRACEHOP_QUERY_URL", "query", environ)


def gateway_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """Base URL of the gateway: $TRACEHOP_GATEWAY_URL, else 127.0.0.1 and the gateway's port."""
    return _url_from_env("TRACEHOP_GATEWAY_URL", "gateway", environ)


def _url_from_env(variable: str, port_name: str, environ: Mapping[str, str] | None) -> str:
    environ = os.environ if environ is None else environ
    explicit = environ.get(variable, "").strip()
    if explicit:
        return explicit.rstrip("/")
    return f"http://{LOCALHOST}:{getattr(ports_from_env(environ), port_name)}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are picked, so none repeats."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOCALHOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_stack_ports() -> StackPorts:
    """A whole set of free ports, for a private stack (integration tests)."""
    gateway, users, worker_metrics, worker_b_metrics, otlp, query, prometheus, redis = free_ports(8)
    return StackPorts(gateway, users, worker_metrics, worker_b_metrics, otlp, query, prometheus, redis)


def port_is_taken(port: int) -> bool:
    """True when a listener already owns 127.0.0.1:port (so a service could not bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the servers use it: a port in TIME_WAIT is not "taken".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return True
    return False


def embedded_redis_url(port: int) -> str:
    return f"redis://{LOCALHOST}:{port}/0"


SEMCONV_STABILITY_OPT_IN = "http,database"


def service_environment(
    ports: StackPorts,
    log_dir: Path,
    redis_url: str,
    inherited: Mapping[str, str],
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables that wire the services of one stack together (same for every program).

    The services inherit the rest of the user's environment from supervisord, so any OTEL_* or
    TRACEHOP_* setting not listed here passes through untouched. `overrides` win over everything.
    """
    env = {
        "REDIS_URL": redis_url,
        "TRACEHOP_USERS_URL": f"http://{LOCALHOST}:{ports.users}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOCALHOST}:{ports.otlp}",
        "TRACEHOP_LOG_DIR": str(log_dir),
        "TRACEHOP_GATEWAY_PORT": str(ports.gateway),
        "TRACEHOP_USERS_PORT": str(ports.users),
        "TRACEHOP_WORKER_METRICS_PORT": str(ports.worker_metrics),
        "TRACEHOP_OTLP_PORT": str(ports.otlp),
        "TRACEHOP_QUERY_PORT": str(ports.query),
        "PYTHONUNBUFFERED": "1",
    }
    # The SDK's 5 s batch delay would keep a fresh trace invisible for seconds; 1 s keeps `make trace` and
    # the freshness target (p95 ≤ 2 s, measured 1.06 s by `make bench`) while halving the small export
    # POSTs every process sends at 500 ms. A user's own choice wins.
    if "OTEL_BSP_SCHEDULE_DELAY" not in inherited:
        env["OTEL_BSP_SCHEDULE_DELAY"] = "1000"
    # The stable HTTP and database semantic conventions: the instrumentations' default (the old ones)
    # names the host three times on every server span (http.host, http.server_name, net.host.name);
    # the stable set says each thing once, which is fewer attributes to collect and export per span.
    if "OTEL_SEMCONV_STABILITY_OPT_IN" not in inherited:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = SEMCONV_STABILITY_OPT_IN
    env.update(overrides or {})
    return env


def local_defaults_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Settings `make up` turns on for a stack on one's own machine, unless set in the shell.

    TRACEHOP_FAULT_INJECTION: a local demo is where one wants error and slow traces on demand
    (`make traffic --faults`); the services themselves keep it off by default, as anywhere else.
    """
    environ = os.environ if environ is None else environ
    defaults = {"TRACEHOP_FAULT_INJECTION": "1"}
    return {name: value for name, value in defaults.items() if name not in environ}


def wiring_overrides_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The wiring variables a user set explicitly in the shell, so `make up` respects them.

    (LocalStack derives them from the ports otherwise; tests get a stack wired by ports alone.)
    """
    environ = os.environ if environ is None else environ
    names = ("TRACEHOP_USERS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return {name: environ[name] for name in names if environ.get(name)}
