"""Grafana provisioning: data sources linked all ways, dashboards that use only what is provisioned."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.static import stack_files

EXPECTED_TYPES = {"prometheus", "loki", "jaeger"}


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    listed = stack_files.grafana_datasources()
    by_uid = {d["uid"]: d for d in listed}
    assert len(by_uid) == len(listed), "two data sources share a UID"
    return by_uid


def _uids_used_by_datasources(datasources: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (f"data source {d['name']}{path}.{key}", value)
        for d in datasources.values()
        for path, key, value in stack_files.walk(d.get("jsonData") or {})
        if key == "datasourceUid"
    ]


def _uids_used_by_dashboards() -> list[tuple[str, str, str | None]]:
    used = []
    for name, dashboard in stack_files.dashboards().items():
        for path, key, value in stack_files.walk(dashboard):
            if key == "datasource" and isinstance(value, dict) and "uid" in value:
                used.append((f"{name}{path}", value["uid"], value.get("type")))
    return used


def test_each_backend_is_provisioned_once_with_a_fixed_uid(datasources: dict[str, dict[str, Any]]):
    assert {d["type"] for d in datasources.values()} == EXPECTED_TYPES
    for uid, datasource in datasources.items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", uid), (
            f"{datasource['name']}: a readable fixed UID, got {uid!r}"
        )
        assert datasource.get("editable") is False, (
            f"{datasource['name']}: provisioned files are the source of truth"
        )


def test_every_uid_a_link_uses_is_provisioned(datasources: dict[str, dict[str, Any]]):
    used = _uids_used_by_datasources(datasources)
    assert len(used) >= 4, "derived field, traces -> logs, traces -> metrics, exemplars"
    for where, uid in used:
        assert uid in datasources, f"{where} points at data source UID {uid!r}, which is not provisioned"


def test_every_uid_a_dashboard_uses_is_provisioned(datasources: dict[str, dict[str, Any]]):
    used = _uids_used_by_dashboards()
    assert used, "dashboards name their data sources by UID"
    for where, uid, kind in used:
        assert uid in datasources, f"{where} uses data source UID {uid!r}, which is not provisioned"
        assert kind in (None, datasources[uid]["type"]), f"{where}: UID {uid} is a {datasources[uid]['type']}"


def test_signals_are_linked_all_ways(datasources: dict[str, dict[str, Any]]):
    by_type = {d["type"]: d for d in datasources.values()}
    loki, jaeger, prometheus = (
        by_type["loki"]["jsonData"],
        by_type["jaeger"]["jsonData"],
        by_type["prometheus"],
    )
    # log -> trace: the trace_id field the collector stores as structured metadata.
    (derived,) = loki["derivedFields"]
    assert derived["datasourceUid"] == by_type["jaeger"]["uid"]
    assert derived["matcherType"] == "label" and derived["matcherRegex"] == "trace_id"
    assert "trace_id" in stack_files.alloy_pipeline()["structured_metadata"], "the field the link reads"
    # trace -> logs: the collector's job label and the trace id filter on structured metadata.
    to_logs = jaeger["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == by_type["loki"]["uid"]
    job = stack_files.alloy_pipeline()["static_labels"]["job"]
    assert f'job="{job}"' in to_logs["query"] and '| trace_id="$${__trace.traceId}"' in to_logs["query"]
    # trace -> metrics: service.name is the Prometheus job.
    to_metrics = jaeger["tracesToMetrics"]
    assert to_metrics["datasourceUid"] == by_type["prometheus"]["uid"]
    assert {"key": "service.name", "value": "job"} in to_metrics["tags"]
    # metric -> trace: exemplars carrying trace_id.
    (exemplar,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert exemplar == {**exemplar, "name": "trace_id", "datasourceUid": by_type["jaeger"]["uid"]}


def test_grafana_variables_are_escaped_for_provisioning():
    # Provisioning expands $NAME and ${NAME} from Grafana's environment; Grafana's own ${__…}/$__…
    # variables must be written $$ or they arrive empty.
    values = [
        value
        for _, _, value in stack_files.walk(yaml.safe_load(stack_files.GRAFANA_DATASOURCES.read_text()))
        if isinstance(value, str)
    ]
    unescaped = [found for value in values for found in re.findall(r"(?<!\$)\$\{?__\w+", value)]
    assert not unescaped, f"write these as $${{…}} / $$__…: {unescaped}"
    assert any("$$" in value for value in values), "the links use Grafana variables"


@pytest.mark.parametrize(("kind", "service", "port"), [("loki", "loki", 3100), ("jaeger", "jaeger", 16686)])
def test_datasource_urls_reach_compose_services(
    datasources: dict[str, dict[str, Any]],
    compose_services: dict[str, Any],
    kind: str,
    service: str,
    port: int,
):
    (datasource,) = [d for d in datasources.values() if d["type"] == kind]
    assert datasource["url"] == f"http://{service}:{port}"
    assert port in stack_files.service_listen_ports(compose_services[service])


def test_dashboard_files_are_where_the_provider_and_compose_put_them(compose_services: dict[str, Any]):
    grafana = compose_services["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    providers = yaml.safe_load(stack_files.GRAFANA_DASHBOARD_PROVIDERS.read_text())["providers"]
    for provider in providers:
        assert mounts.get(provider["options"]["path"]) == stack_files.GRAFANA_DASHBOARDS_DIR
    assert mounts.get("/etc/grafana/provisioning") == stack_files.GRAFANA_DATASOURCES.parents[1]
    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert str(home.parent) in {p["options"]["path"] for p in providers}, (
        f"home dashboard {home} is not mounted"
    )
    assert (stack_files.GRAFANA_DASHBOARDS_DIR / home.name).exists(), (
        f"home dashboard {home.name} does not exist"
    )


def test_grafana_is_read_only_for_anonymous_visitors(compose_services: dict[str, Any]):
    environment = compose_services["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    raw = stack_files.raw_compose()["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert raw.startswith("${GRAFANA_ADMIN_PASSWORD:?"), "the admin password comes from the environment"


def test_overview_dashboard_has_what_the_issue_asks():
    dashboards = {d["title"]: d for d in stack_files.dashboards().values()}
    overview = dashboards["tracehop overview"]
    panels = [p for p in overview["panels"] if p["type"] != "row"]
    queries = " ".join(t.get("expr", "") for p in panels for t in p.get("targets") or [])
    for needed in (
        "http_requests_total",  # request rate, error rate
        'status=~"5.."',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "tracehop_jobs_total",  # jobs done / failed / retried
        "tracehop_job_duration_seconds_bucket",
    ):
        assert needed in queries, f"the overview dashboard has no query with {needed}"
    assert any(p["type"] == "logs" for p in panels), "a logs panel"
    assert any((p.get("datasource") or {}).get("type") == "jaeger" for p in panels), "a panel of traces"
    latency = [
        t for p in panels for t in p.get("targets") or [] if "http_request_duration" in t.get("expr", "")
    ]
    assert all(t.get("exemplar") for t in latency), "latency panels show exemplars (links to traces)"
