"""prometheus.yml checked by promtool and against the compose services it scrapes; the PromQL we ship."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.required_tools import skip_or_fail
from tests.static import stack_files
from tests.static.stack_files import CONTRACT_METRICS, PYTHON_SERVICES


@pytest.fixture(scope="module")
def promtool() -> str:
    path = stack_files.promtool()
    if path is None:
        message = (
            "promtool is not installed: `apt-get install --no-install-recommends prometheus` (Debian's "
            "package ships it; .ci/run installs it)"
        )
        skip_or_fail("prometheus", message)
    return path


# Settings of prometheus.yml newer than some promtool we may check it with (Debian's is 2.42), with the
# Prometheus release that introduced them. An older promtool checks the file without them; the tests below
# check those settings themselves.
NEWER_SETTINGS = {("storage", "tsdb", "retention"): (3, 8)}


def _promtool_version(promtool: str) -> tuple[int, int]:
    output = subprocess.run([promtool, "--version"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"version (\d+)\.(\d+)", output)
    assert found, f"cannot read promtool's version from {output!r}"
    return int(found.group(1)), int(found.group(2))


def test_promtool_accepts_the_configuration(promtool: str, tmp_path: Path):
    config = stack_files.prometheus_config()
    version = _promtool_version(promtool)
    for path, since in NEWER_SETTINGS.items():
        if version < since:
            *parents, leaf = path
            section = config
            for key in parents:
                section = section[key]
            del section[leaf]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run(
        [promtool, "check", "config", str(checked)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"promtool check config failed:\n{result.stdout}{result.stderr}"


def test_scrapes_every_15_seconds():
    assert stack_files.prometheus_config()["global"]["scrape_interval"] == "15s", "the design document's 15 s"


def test_every_target_is_a_compose_service_serving_metrics_on_that_port(compose_services: dict[str, Any]):
    targets = stack_files.prometheus_targets()
    assert targets, "prometheus.yml scrapes nothing"
    for job, target in targets:
        host, port = stack_files.split_host_port(target)
        assert host in compose_services, f"job {job}: target {target} is not a service of docker-compose.yml"
        # One name per service everywhere: the job label, the Loki `service` label, the span's service.name
        # (Grafana's trace -> metrics link maps service.name onto job). A service of several containers
        # (the worker's two nodes) is one job with a target per container.
        name = stack_files.service_name(compose_services[host])
        assert name == job, f"job {job} scrapes {target}, whose service.name is {name}: name the job after it"
        address = stack_files.metrics_listen_address(compose_services[host])
        assert address is not None, f"job {job}: service {host} serves no /metrics that tests can see"
        listen_host, listen_port = stack_files.split_host_port(address)
        assert listen_port == port, f"job {job} scrapes port {port}, but {host} serves /metrics on {address}"
        assert listen_host == "0.0.0.0", (
            f"{host} serves /metrics on {address}: Prometheus's container can't reach it"
        )


def test_every_python_service_is_scraped():
    scraped = {stack_files.split_host_port(target)[0] for _, target in stack_files.prometheus_targets()}
    assert set(PYTHON_SERVICES) <= scraped, f"not scraped: {sorted(set(PYTHON_SERVICES) - scraped)}"


def test_target_labels_agree_with_the_job(compose_services: dict[str, Any]):
    for job in stack_files.prometheus_config()["scrape_configs"]:
        for static in job.get("static_configs") or []:
            service = (static.get("labels") or {}).get("service")
            assert service in (None, job["job_name"]), (
                f"job {job['job_name']} labels its targets service={service}"
            )


def test_prometheus_keeps_15_days_and_exemplars(compose_services: dict[str, Any]):
    service = compose_services["prometheus"]
    command = service["command"]
    # In the file, as Prometheus >= 3.8 wants it (the flags are deprecated there).
    assert stack_files.prometheus_config()["storage"]["tsdb"]["retention"] == {"time": "15d"}
    assert not [arg for arg in command if arg.startswith("--storage.tsdb.retention")], (
        "retention belongs in prometheus.yml: --storage.tsdb.retention.* are deprecated flags"
    )
    assert "--enable-feature=exemplar-storage" in command
    config_flag = next(arg for arg in command if arg.startswith("--config.file="))
    (mount,) = [v for v in service["volumes"] if v["target"] == config_flag.split("=", 1)[1]]
    assert Path(mount["source"]) == stack_files.PROMETHEUS_CONFIG, (
        "compose must mount the shared prometheus.yml"
    )
    assert mount.get("read_only")


def test_worker_health_check_asks_the_metrics_port(compose_services: dict[str, Any]):
    for node in ("worker", "worker-b"):
        worker = compose_services[node]
        port = stack_files.split_host_port(stack_files.metrics_listen_address(worker))[1]
        assert f":{port}/metrics" in " ".join(worker["healthcheck"]["test"]), node


def test_both_worker_nodes_are_scraped_and_share_the_pool(compose_services: dict[str, Any]):
    """The worker service is two containers consuming one queue, each half of the pool of 2."""
    targets = [target for job, target in stack_files.prometheus_targets() if job == "worker"]
    assert sorted(stack_files.split_host_port(target)[0] for target in targets) == ["worker", "worker-b"]
    nodes = [compose_services[name] for name in ("worker", "worker-b")]
    assert [node["environment"]["TRACEHOP_WORKER_CONCURRENCY"] for node in nodes] == ["1", "1"]
    assert {node["environment"].get("TRACEHOP_CELERY_QUEUE") for node in nodes} == {None}


# ---------------------------------------------------------------------------------------- PromQL we ship


def _shipped_promql() -> list[tuple[str, str]]:
    queries = []
    for name, dashboard in stack_files.dashboards().items():
        queries.extend(
            (f"{name}: {where}", expr)
            for where, expr in stack_files.dashboard_queries(dashboard, "prometheus")
        )
    for datasource in stack_files.grafana_datasources():
        for query in (datasource.get("jsonData") or {}).get("tracesToMetrics", {}).get("queries") or []:
            # Provisioning turns `$$` into `$`; $__tags becomes the span's label matchers.
            expr = query["query"].replace("$$", "$").replace("{$__tags}", '{job="gateway"}')
            queries.append((f"datasource {datasource['name']}: tracesToMetrics {query['name']!r}", expr))
    return queries


def test_dashboards_hold_promql():
    assert len(_shipped_promql()) >= 8, "the overview dashboard's panels query Prometheus"


def test_shipped_promql_parses(promtool: str, tmp_path: Path):
    # promtool has no offline query parser, but `check rules` parses every rule's expression.
    queries = _shipped_promql()
    rules = {
        "groups": [
            {
                "name": "shipped-promql",
                "rules": [
                    {
                        "record": f"tracehop:shipped_query_{index}",
                        "expr": stack_files.grafana_to_prometheus(expr),
                    }
                    for index, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    rules_file = tmp_path / "shipped.rules.yml"
    rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        listing = "\n".join(f"  tracehop:shipped_query_{i}  {where}" for i, (where, _) in enumerate(queries))
        pytest.fail(f"promtool rejects shipped PromQL:\n{result.stdout}{result.stderr}\nwhich is:\n{listing}")


def test_shipped_promql_uses_our_metric_names():
    for where, expr in _shipped_promql():
        unknown = stack_files.promql_metric_names(expr) - CONTRACT_METRICS
        assert not unknown, f"{where}: {sorted(unknown)} are not metrics our services export ({expr})"


def test_grafana_reads_prometheus_at_the_right_place(compose_services: dict[str, Any]):
    (datasource,) = [d for d in stack_files.grafana_datasources() if d["type"] == "prometheus"]
    host, port = stack_files.split_host_port(datasource["url"].removeprefix("http://"))
    assert host == "prometheus" and port in stack_files.service_listen_ports(compose_services["prometheus"])
