"""The embedded stack's configuration: ports and environment, the derived Prometheus configuration,
and supervisord.conf as supervisord itself parses it. Nothing here starts a process."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from supervisor.options import ClientOptions, ServerOptions

from services.web.settings import SERVICES
from tests.required_tools import skip_or_fail
from tracehop.stack.config import (
    StackConfigError,
    StackPorts,
    free_ports,
    ports_from_env,
)
from tracehop.stack.prometheus_config import (
    SOURCE_CONFIG,
    PrometheusConfigError,
    derive_prometheus_config,
    load_prometheus_config,
    retention_time,
    scrape_ports,
    write_local_prometheus_config,
)
from tracehop.stack.runner import LocalStack, StackError
from tracehop.stack.supervisord_conf import Program, render_supervisord_conf

PORTS = {
    "gateway": 18080,
    "users": 18081,
    "worker_metrics": 19101,
    "worker_b_metrics": 19102,
    "otlp": 14318,
    "query": 26686,
    "prometheus": 19090,
    "redis": 16379,
}


# ---------------------------------------------------------------------------------------- ports, env


def test_ports_come_from_the_environment_with_defaults_for_the_rest() -> None:
    ports = ports_from_env({"TRACEHOP_GATEWAY_PORT": "18080", "TRACEHOP_QUERY_PORT": "26686"})

    assert ports == StackPorts(gateway=18080, query=26686)
    assert (ports.users, ports.worker_metrics, ports.otlp, ports.prometheus) == (8081, 9101, 4318, 9090)


@pytest.mark.parametrize("raw", ["http", "0", "70000"])
def test_a_bad_port_variable_is_a_clear_error(raw: str) -> None:
    with pytest.raises(StackConfigError, match="TRACEHOP_USERS_PORT"):
        ports_from_env({"TRACEHOP_USERS_PORT": raw})


def test_an_unknown_port_name_is_refused() -> None:
    with pytest.raises(StackConfigError, match="gatway"):
        StackPorts.from_mapping({"gatway": 1})


def test_free_ports_are_distinct() -> None:
    ports = free_ports(8)

    assert len(set(ports)) == 8


def test_a_socket_path_too_long_for_unix_sockets_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match="too long"):
        LocalStack(tmp_path / ("v" * 120), tmp_path / "logs", PORTS)


def test_the_embedded_redis_port_is_remembered_between_runs(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "redis.port").write_text("23456\n")

    stack = LocalStack(tmp_path / "var", tmp_path / "logs", {"gateway": 18080})

    assert stack.ports.redis == 23456
    assert stack.env["REDIS_URL"] == "redis://127.0.0.1:23456/0"


# ------------------------------------------------------------------------------------------ prometheus

SHARED = {
    "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
    "rule_files": ["alerts.yml"],
    "scrape_configs": [
        {
            "job_name": "gateway",
            "static_configs": [{"targets": ["gateway:8080"], "labels": {"service": "gateway"}}],
        },
        {"job_name": "users", "metrics_path": "/metrics", "static_configs": [{"targets": ["users:8081"]}]},
        {"job_name": "worker", "static_configs": [{"targets": ["worker:9101", "worker-b:9101"]}]},
    ],
}


def test_each_target_is_rewritten_to_the_port_of_its_program() -> None:
    derived = derive_prometheus_config(SHARED, scrape_ports(StackPorts.from_mapping(PORTS)))

    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in derived["scrape_configs"]}
    assert targets == {
        "gateway": ["127.0.0.1:18080"],
        "users": ["127.0.0.1:18081"],
        # Both worker programs are targets of the one worker job.
        "worker": ["127.0.0.1:19101", "127.0.0.1:19102"],
    }


def test_a_worker_program_the_stack_does_not_run_is_not_scraped() -> None:
    ports = scrape_ports(StackPorts.from_mapping(PORTS), programs=["worker"])

    (worker,) = [
        job
        for job in derive_prometheus_config(SHARED, ports)["scrape_configs"]
        if job["job_name"] == "worker"
    ]

    assert worker["static_configs"][0]["targets"] == ["127.0.0.1:19101"]


def test_global_settings_job_options_and_labels_are_kept_other_sections_dropped() -> None:
    derived = derive_prometheus_config(SHARED, scrape_ports(StackPorts()))

    assert derived["global"] == SHARED["global"]
    assert derived["scrape_configs"][0]["static_configs"][0]["labels"] == {"service": "gateway"}
    assert derived["scrape_configs"][1]["metrics_path"] == "/metrics"
    assert "rule_files" not in derived
    # The shared document itself is untouched (docker compose mounts it as is).
    assert SHARED["scrape_configs"][0]["static_configs"][0]["targets"] == ["gateway:8080"]


def test_an_unknown_target_is_a_clear_error() -> None:
    billing = {"job_name": "billing", "static_configs": [{"targets": ["billing:9000"]}]}
    shared = {"scrape_configs": [*SHARED["scrape_configs"], billing]}

    with pytest.raises(
        PrometheusConfigError, match="'billing:9000'.*known hosts: gateway, users, worker, worker-b"
    ):
        derive_prometheus_config(shared, scrape_ports(StackPorts()))


def test_the_scrape_interval_can_be_shortened_for_tests() -> None:
    derived = derive_prometheus_config(SHARED, scrape_ports(StackPorts()), scrape_interval="1s")

    assert derived["global"]["scrape_interval"] == "1s"
    assert derived["global"]["evaluation_interval"] == "15s"


def test_the_repository_configuration_maps_onto_the_local_stack(tmp_path: Path) -> None:
    """The shared infra/prometheus/prometheus.yml only names jobs the local stack runs."""
    written = write_local_prometheus_config(tmp_path / "prometheus.yml", StackPorts.from_mapping(PORTS))

    derived = yaml.safe_load(written.read_text())
    jobs = [job["job_name"] for job in derived["scrape_configs"]]
    assert jobs == [job["job_name"] for job in load_prometheus_config(SOURCE_CONFIG)["scrape_configs"]]
    assert all(
        target.startswith("127.0.0.1:")
        for job in derived["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    )


def test_retention_is_read_from_the_shared_configuration() -> None:
    assert retention_time({"storage": {"tsdb": {"retention": {"time": "30d"}}}}) == "30d"
    assert retention_time(load_prometheus_config(SOURCE_CONFIG)) == "15d"
    with pytest.raises(PrometheusConfigError, match="no storage.tsdb.retention.time"):
        retention_time(SHARED)


def test_promtool_accepts_the_derived_configuration(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail(
            "prometheus",
            "promtool is not installed (Debian: apt-get install --no-install-recommends prometheus)",
        )
    written = write_local_prometheus_config(tmp_path / "prometheus.yml", StackPorts())

    result = subprocess.run([promtool, "check", "config", str(written)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------- supervisord.conf


def parse_with_supervisord(conf: Path) -> dict[str, object]:
    """The programs as supervisord itself reads supervisord.conf: {name: ProcessConfig}."""
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    return {
        process.name: process for group in options.process_group_configs for process in group.process_configs
    }


def make_stack(tmp_path: Path, **kwargs) -> LocalStack:
    kwargs.setdefault("prometheus", None)
    return LocalStack(tmp_path / "var", tmp_path / "logs", PORTS, **kwargs)


@pytest.fixture
def prometheus_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `prometheus` as the only thing on PATH: the runner must not depend on the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "prometheus"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return fake


def test_every_program_is_configured(tmp_path: Path, prometheus_on_path: Path) -> None:
    programs = parse_with_supervisord(make_stack(tmp_path).write_config())

    assert list(programs) == [
        "redis",
        "trace-store",
        "users",
        "worker",
        "worker-b",
        "beat",
        "gateway",
        "prometheus",
    ]
    assert "--port 16379 --bind 127.0.0.1" in programs["redis"].command
    assert "-m tracehop trace-store --otlp-port 14318 --query-port 26686" in programs["trace-store"].command
    assert "-b 127.0.0.1:18081 --env OTEL_SERVICE_NAME=users 'services.users:create_app()'" in (
        programs["users"].command
    )
    assert "-b 127.0.0.1:18080 --env OTEL_SERVICE_NAME=gateway" in programs["gateway"].command
    assert "-m celery -A services.worker.celery_app worker" in programs["worker"].command
    assert programs["prometheus"].command.startswith(str(prometheus_on_path))
    assert "--web.listen-address=127.0.0.1:19090" in programs["prometheus"].command
    # The retention of the shared prometheus.yml, as the flag Debian's Prometheus 2.42 reads.
    assert "--storage.tsdb.retention.time=15d" in programs["prometheus"].command


def test_beat_keeps_its_schedule_under_var_and_traces_as_its_own_service(
    tmp_path: Path, prometheus_on_path: Path
) -> None:
    programs = parse_with_supervisord(make_stack(tmp_path, inherited_env={}).write_config())

    beat = programs["beat"]
    assert "-m services.worker.beat --loglevel INFO" in beat.command
    assert f"--schedule {tmp_path / 'var' / 'celerybeat-schedule'}" in beat.command
    assert beat.environment["OTEL_SERVICE_NAME"] == "beat"
    assert beat.environment["REDIS_URL"] == programs["worker"].environment["REDIS_URL"]


@pytest.mark.parametrize(
    ("environment", "pool"),
    [
        ({}, "prefork"),
        ({"TRACEHOP_WORKER_POOL": "gevent"}, "gevent"),
        ({"TRACEHOP_WORKER_POOL": "threads"}, "threads"),
    ],
)
def test_the_worker_pool_goes_on_the_command_line(
    tmp_path: Path, prometheus_on_path: Path, environment: dict[str, str], pool: str
) -> None:
    # On the command line, where Celery looks for gevent before it imports anything (monkey-patching).
    programs = parse_with_supervisord(make_stack(tmp_path, inherited_env=environment).write_config())
    for name in ("worker", "worker-b"):
        assert f"worker --loglevel INFO --pool {pool} -n {name}@%h" in programs[name].command


def test_an_unknown_worker_pool_is_a_clear_error(tmp_path: Path, prometheus_on_path: Path) -> None:
    stack = make_stack(tmp_path, inherited_env={}, env_overrides={"TRACEHOP_WORKER_POOL": "eventlets"})
    with pytest.raises(StackError, match="TRACEHOP_WORKER_POOL='eventlets': choose one of prefork, threads"):
        stack.write_config()


def test_the_worker_service_is_two_nodes_sharing_its_pool(tmp_path: Path, prometheus_on_path: Path) -> None:
    stack = make_stack(tmp_path, inherited_env={"TRACEHOP_WORKER_CONCURRENCY": "5"})
    programs = parse_with_supervisord(stack.write_config())

    first, second = programs["worker"].environment, programs["worker-b"].environment
    # The service's pool is unchanged in total: 3 + 2.
    assert (first["TRACEHOP_WORKER_CONCURRENCY"], second["TRACEHOP_WORKER_CONCURRENCY"]) == ("3", "2")
    # Each its own /metrics and multiprocess directory (a worker empties its directory when it starts).
    assert (first["TRACEHOP_WORKER_METRICS_PORT"], second["TRACEHOP_WORKER_METRICS_PORT"]) == (
        "19101",
        "19102",
    )
    assert first["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "var" / "prom-worker")
    assert second["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "var" / "prom-worker-b")
    # One service: the same name in traces, logs/worker.log and the same queue.
    assert first["OTEL_SERVICE_NAME"] == second["OTEL_SERVICE_NAME"] == "worker"
    probes = {probe.component: probe.url for probe in stack.probes()}
    assert (probes["worker"], probes["worker-b"]) == (
        "http://127.0.0.1:19101/metrics",
        "http://127.0.0.1:19102/metrics",
    )
    assert stack.worker_metrics_urls == [probes["worker"], probes["worker-b"]]


def test_a_pool_of_one_runs_one_worker_program(tmp_path: Path, prometheus_on_path: Path) -> None:
    stack = make_stack(tmp_path, inherited_env={}, env_overrides={"TRACEHOP_WORKER_CONCURRENCY": "1"})

    programs = parse_with_supervisord(stack.write_config())

    assert "worker-b" not in programs and "worker-b" not in stack.components
    assert programs["worker"].environment["TRACEHOP_WORKER_CONCURRENCY"] == "1"
    assert "worker_b_metrics" not in stack.urls


@pytest.mark.parametrize("raw", ["0", "two"])
def test_a_bad_worker_concurrency_is_a_clear_error(tmp_path: Path, raw: str) -> None:
    stack = make_stack(tmp_path, inherited_env={"TRACEHOP_WORKER_CONCURRENCY": raw})

    with pytest.raises(StackError, match=f"TRACEHOP_WORKER_CONCURRENCY='{raw}'"):
        stack.write_config()


def test_beat_can_be_left_out(tmp_path: Path, prometheus_on_path: Path) -> None:
    stack = make_stack(tmp_path, beat=False)

    assert "beat" not in parse_with_supervisord(stack.write_config())
    assert "beat" not in stack.components


def test_up_removes_a_stale_beat_ready_marker_and_keeps_the_schedule(
    tmp_path: Path, prometheus_on_path: Path
) -> None:
    stack = make_stack(tmp_path)
    (probe,) = [probe for probe in stack.probes() if probe.component == "beat"]
    assert probe.url == str(tmp_path / "var" / "celerybeat-schedule.ready")
    (tmp_path / "var").mkdir()
    schedule = tmp_path / "var" / "celerybeat-schedule"
    schedule.write_bytes(b"")
    stack.layout.beat_ready_marker.write_text('{"pid": 1, "started_ticks": 1, "ready_at": 0, "cpu_s": 0}')

    stack._prepare_files()  # what `start` does first

    assert not stack.layout.beat_ready_marker.exists()
    assert schedule.exists()  # each job's last run: one missed while the stack was down runs at `up`
    assert (probe.check() or "").startswith("supervisord does not answer")  # no stack runs


def test_make_up_allows_fault_injection_unless_the_shell_says_otherwise(tmp_path: Path) -> None:
    environ = {"TRACEHOP_VAR_DIR": str(tmp_path / "var"), "TRACEHOP_LOG_DIR": str(tmp_path / "logs")}
    assert LocalStack.from_env(environ).env["TRACEHOP_FAULT_INJECTION"] == "1"

    stack = LocalStack.from_env({**environ, "TRACEHOP_FAULT_INJECTION": "0"})
    # Not overridden: the services inherit the shell's value from supervisord.
    assert "TRACEHOP_FAULT_INJECTION" not in stack.env


def test_programs_stop_as_a_group_restart_and_log_under_var(tmp_path: Path, prometheus_on_path: Path) -> None:
    programs = parse_with_supervisord(make_stack(tmp_path).write_config())

    for name, program in programs.items():
        assert program.stopasgroup and program.killasgroup, name
        assert program.autorestart, name
        assert program.stdout_logfile == str(tmp_path / "var" / f"{name}.out")
        assert program.redirect_stderr, name
        assert Path(program.directory) == Path(__file__).resolve().parents[2]


def test_redis_is_omitted_when_a_redis_url_is_given(tmp_path: Path, prometheus_on_path: Path) -> None:
    stack = make_stack(tmp_path, redis_url="redis://127.0.0.1:6379/5")

    programs = parse_with_supervisord(stack.write_config())

    assert "redis" not in programs
    assert "redis" not in stack.components  # nor waited for by `up`
    assert programs["worker"].environment["REDIS_URL"] == "redis://127.0.0.1:6379/5"


def test_prometheus_is_omitted_when_no_binary_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    stack = make_stack(tmp_path)

    programs = parse_with_supervisord(stack.write_config())

    assert "prometheus" not in programs
    assert "prometheus" not in stack.urls
    assert not (tmp_path / "var" / "prometheus.yml").exists()


def test_the_services_get_the_stack_wiring(tmp_path: Path, prometheus_on_path: Path) -> None:
    programs = parse_with_supervisord(make_stack(tmp_path, inherited_env={}).write_config())

    for service in SERVICES:
        env = programs[service].environment
        assert env["REDIS_URL"] == "redis://127.0.0.1:16379/0"
        assert env["TRACEHOP_USERS_URL"] == "http://127.0.0.1:18081"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:14318"
        assert env["OTEL_BSP_SCHEDULE_DELAY"] == "1000"
        assert env["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http,database"
        assert env["TRACEHOP_LOG_DIR"] == str(tmp_path / "logs")
        assert env["TRACEHOP_WORKER_METRICS_PORT"] == "19101"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert env["OTEL_SERVICE_NAME"] == service
        assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "var" / f"prom-{service}")


def test_a_users_own_batch_delay_is_not_overridden(tmp_path: Path, prometheus_on_path: Path) -> None:
    # Not written into the configuration: the services inherit the user's value from supervisord.
    stack = make_stack(
        tmp_path, inherited_env={"OTEL_BSP_SCHEDULE_DELAY": "5000", "OTEL_SEMCONV_STABILITY_OPT_IN": ""}
    )

    programs = parse_with_supervisord(stack.write_config())

    assert "OTEL_BSP_SCHEDULE_DELAY" not in programs["gateway"].environment
    assert "OTEL_SEMCONV_STABILITY_OPT_IN" not in programs["gateway"].environment


def test_overrides_win_and_survive_supervisords_interpolation(
    tmp_path: Path, prometheus_on_path: Path
) -> None:
    stack = make_stack(
        tmp_path,
        env_overrides={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "TRACEHOP_NOTE": "100%, done"},
    )

    env = parse_with_supervisord(stack.write_config())["gateway"].environment

    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert env["TRACEHOP_NOTE"] == "100%, done"


def test_a_value_supervisord_cannot_carry_is_refused(tmp_path: Path) -> None:
    program = Program("gateway", ["true"], {"TRACEHOP_NOTE": 'say "hi"'})
    layout = make_stack(tmp_path).layout

    with pytest.raises(ValueError, match="TRACEHOP_NOTE"):
        render_supervisord_conf([program], layout)


def test_supervisord_and_supervisorctl_share_a_private_socket(
    tmp_path: Path, prometheus_on_path: Path
) -> None:
    conf = make_stack(tmp_path).write_config()
    server = ServerOptions()
    server.configfile = str(conf)
    server.process_config(do_usage=False)
    client = ClientOptions()
    client.realize(args=["-c", str(conf)])

    socket_path = tmp_path / "var" / "supervisor.sock"
    [listener] = server.configroot.supervisord.server_configs
    assert (listener["family"], listener["file"], listener["chmod"]) == (
        socket.AF_UNIX,
        str(socket_path),
        0o700,
    )
    assert client.serverurl == f"unix://{socket_path}"
    assert server.pidfile == str(tmp_path / "var" / "supervisord.pid")
