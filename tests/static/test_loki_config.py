"""infra/loki/config.yaml: the parts the rest of the stack relies on.

Grafana Loki cannot be installed here (Debian's `loki` package is an unrelated genetics program; PyPI and
npm have no Loki), so `loki -verify-config` cannot run: the checks read the YAML against the facts in
shared/design/backend-notes.md (single binary, filesystem, schema v13, tsdb, structured metadata).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.static import stack_files

# Top-level blocks of Loki 3.x's configuration file (Loki's configuration reference). A misspelt block
# would make Loki refuse to start; here it fails a test instead.
LOKI_TOP_LEVEL_KEYS = {
    "target", "auth_enabled", "ballast_bytes", "server", "distributor", "querier", "query_scheduler",
    "frontend", "query_range", "ruler", "ingester_client", "ingester", "pattern_ingester", "index_gateway",
    "bloom_build", "bloom_gateway", "storage_config", "chunk_store_config", "schema_config", "compactor",
    "limits_config", "frontend_worker", "table_manager", "memberlist", "kafka_config", "runtime_config",
    "operational_config", "tracing", "analytics", "common", "shutdown_delay", "metrics_namespace",
    "ui", "dataobj", "block_builder", "block_scheduler", "partition_ingester",
}  # fmt: skip


@pytest.fixture(scope="module")
def loki() -> dict[str, Any]:
    return yaml.safe_load(stack_files.LOKI_CONFIG.read_text())


def test_only_known_top_level_blocks(loki: dict[str, Any]):
    unknown = set(loki) - LOKI_TOP_LEVEL_KEYS
    assert not unknown, f"not Loki configuration blocks: {sorted(unknown)}"


def test_schema_v13_on_tsdb_and_the_filesystem(loki: dict[str, Any]):
    configs = loki["schema_config"]["configs"]
    current = configs[-1]
    assert current["schema"] == "v13", "schema v13 (structured metadata needs it)"
    assert current["store"] == "tsdb"
    assert current["object_store"] == "filesystem"
    assert current["index"]["period"] == "24h", "tsdb requires a 24h index period"
    assert loki["common"]["storage"]["filesystem"]["chunks_directory"]


def test_structured_metadata_is_allowed(loki: dict[str, Any]):
    # The collectors send trace_id as structured metadata; Loki would reject every push without this.
    assert loki.get("limits_config", {}).get("allow_structured_metadata", True) is True


def test_single_instance_without_tenants(loki: dict[str, Any]):
    assert loki["auth_enabled"] is False, "the collectors and Grafana send no tenant id"
    assert loki["common"]["replication_factor"] == 1
    assert loki["common"]["ring"]["kvstore"]["store"] == "inmemory"


def test_retention_matches_prometheus(loki: dict[str, Any], compose_services: dict[str, Any]):
    assert loki["limits_config"]["retention_period"] == "360h", "15 days, like Prometheus"
    assert stack_files.prometheus_config()["storage"]["tsdb"]["retention"]["time"] == "15d"
    compactor = loki["compactor"]
    assert compactor["retention_enabled"] is True and compactor["delete_request_store"] == "filesystem"


def test_data_lives_in_the_named_volume(loki: dict[str, Any], compose_services: dict[str, Any]):
    (volume,) = [v for v in compose_services["loki"]["volumes"] if v["type"] == "volume"]
    data_root = Path(volume["target"])
    paths = [loki["common"]["path_prefix"], loki["compactor"]["working_directory"]]
    paths += list(loki["common"]["storage"]["filesystem"].values())
    for path in paths:
        assert Path(path).is_relative_to(data_root), f"{path} is outside the volume mounted at {data_root}"


def test_compose_runs_this_file_and_publishes_its_port(
    loki: dict[str, Any], compose_services: dict[str, Any]
):
    service = compose_services["loki"]
    flag = next(arg for arg in service["command"] if arg.startswith("-config.file="))
    (mount,) = [v for v in service["volumes"] if v["target"] == flag.split("=", 1)[1]]
    assert Path(mount["source"]) == stack_files.LOKI_CONFIG and mount.get("read_only")
    port = loki["server"]["http_listen_port"]
    assert port in {p["target"] for p in service["ports"]}
    # The image is distroless (since 3.6.0): only Loki's own -health flag (since 3.6.5) can check it.
    assert service["healthcheck"]["test"] == ["CMD", "/usr/bin/loki", "-health"]
