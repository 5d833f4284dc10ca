"""The log collectors (Alloy, and Promtail under its profile) against the files and fields our services write.

Alloy's syntax has no parser outside the `alloy` binary, so tests/static/alloy_syntax.py parses it and the
checks below verify its structure: known components, resolvable references, a complete pipeline.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.static import alloy_syntax, stack_files
from tests.static.stack_files import CONTRACT_LOG_FIELDS, PYTHON_SERVICES, REPO_ROOT

# The Alloy components we use: the attributes each requires and the exports others may reference.
ALLOY_COMPONENTS: dict[str, dict[str, set[str]]] = {
    "local.file_match": {"required": {"path_targets"}, "exports": {"targets"}, "blocks": set()},
    "loki.source.file": {
        "required": {"targets", "forward_to"},
        "exports": set(),
        "blocks": {"decompression", "file_watch"},
    },
    "loki.process": {
        "required": {"forward_to"},
        "exports": {"receiver"},
        "blocks": {
            "stage.json", "stage.labels", "stage.structured_metadata", "stage.timestamp", "stage.label_drop",
            "stage.label_keep", "stage.static_labels", "stage.drop", "stage.match", "stage.output",
            "stage.regex", "stage.template", "stage.logfmt",
        },
    },
    "loki.write": {"required": set(), "exports": {"receiver"}, "blocks": {"endpoint", "external_labels"}},
}  # fmt: skip
# Standard-library namespaces a reference may start with instead of a component.
ALLOY_STDLIB = {"sys", "env", "constants", "encoding", "string", "array", "file", "convert", "json_path"}

COLLECTORS = {"alloy": stack_files.alloy_pipeline, "promtail": stack_files.promtail_pipeline}


# ------------------------------------------------------------------------------------ Alloy structure


def test_alloy_parser_rejects_broken_syntax():
    with pytest.raises(alloy_syntax.AlloySyntaxError):
        alloy_syntax.parse('loki.write "x" {\n  endpoint {\n    url = "http://loki:3100"\n  }\n')
    with pytest.raises(alloy_syntax.AlloySyntaxError):
        alloy_syntax.parse('local.file_match "x" {\n  path_targets = [{ __path__ = "a" job = "b" }]\n}\n')


def test_alloy_config_parses():
    statements = stack_files.alloy_config()
    assert statements and all(isinstance(item, alloy_syntax.Block) for item in statements), (
        "config.alloy holds component blocks only"
    )


def test_alloy_components_are_known_and_complete():
    seen: set[tuple[str, str | None]] = set()
    for block in stack_files.alloy_config():
        assert block.name in ALLOY_COMPONENTS, f"line {block.line}: unknown component {block.name}"
        assert block.label, f"line {block.line}: component {block.name} needs a label"
        assert (block.name, block.label) not in seen, f"line {block.line}: {block.name} {block.label!r} twice"
        seen.add((block.name, block.label))
        schema = ALLOY_COMPONENTS[block.name]
        missing = schema["required"] - set(block.attributes())
        assert not missing, f"line {block.line}: {block.name} {block.label!r} lacks {sorted(missing)}"
        for nested in block.blocks():
            assert nested.name in schema["blocks"], f"line {nested.line}: {nested.name} inside {block.name}?"
    assert {name for name, _ in seen} == set(ALLOY_COMPONENTS), (
        "file_match -> source.file -> process -> write"
    )


def test_alloy_references_resolve():
    components = {(b.name, b.label): b for b in stack_files.alloy_config()}
    for block in alloy_syntax.walk_blocks(stack_files.alloy_config()):
        for attribute in block.body:
            if not isinstance(attribute, alloy_syntax.Attribute):
                continue
            for ref in alloy_syntax.references(attribute.value):
                if ref.path[0] in ALLOY_STDLIB:
                    continue
                component, label, export = ".".join(ref.path[:-2]), ref.path[-2], ref.path[-1]
                assert (component, label) in components, f"line {attribute.line}: {ref} names no component"
                exports = ALLOY_COMPONENTS[component]["exports"]
                assert export in exports, (
                    f"line {attribute.line}: {component} exports {sorted(exports)}, not {export}"
                )


def test_alloy_pipeline_is_connected_end_to_end():
    def forwards(block_name: str) -> set[str]:
        attributes = stack_files.alloy_component(block_name).attributes()
        value = attributes.get("forward_to", attributes.get("targets"))
        return {".".join(ref.path[:-1]) for ref in alloy_syntax.references(value)}

    file_match = stack_files.alloy_component("local.file_match")
    source = stack_files.alloy_component("loki.source.file")
    process = stack_files.alloy_component("loki.process")
    write = stack_files.alloy_component("loki.write")
    targets = {".".join(r.path[:-1]) for r in alloy_syntax.references(source.attributes()["targets"])}
    assert targets == {f"local.file_match.{file_match.label}"}
    assert forwards("loki.source.file") == {f"loki.process.{process.label}"}
    assert forwards("loki.process") == {f"loki.write.{write.label}"}


# ----------------------------------------------------------------------- the same pipeline in both tools


def test_promtail_does_what_alloy_does():
    alloy, promtail = stack_files.alloy_pipeline(), stack_files.promtail_pipeline()
    for key in (
        "json_fields",
        "labels",
        "structured_metadata",
        "timestamp",
        "label_drop",
        "path_patterns",
        "push_urls",
    ):
        assert alloy[key] == promtail[key], f"{key}: Alloy {alloy[key]} but Promtail {promtail[key]}"
    assert set(alloy["static_labels"]) == set(promtail["static_labels"])
    assert alloy["static_labels"]["job"] == promtail["static_labels"]["job"] == "tracehop"


@pytest.mark.parametrize("collector", COLLECTORS)
def test_stream_labels_are_the_documented_few(collector: str):
    pipeline = COLLECTORS[collector]()
    labels = set(pipeline["labels"]) | set(pipeline["static_labels"])
    assert labels == {"job", "service", "level", "env"}, f"{collector}: stream labels {sorted(labels)}"
    # Per-request values would create one stream each: they travel as structured metadata.
    assert "trace_id" in pipeline["structured_metadata"] and "trace_id" not in labels
    assert "filename" in pipeline["label_drop"], f"{collector}: the file name duplicates `service`"


@pytest.mark.parametrize("collector", COLLECTORS)
def test_collector_reads_the_files_the_services_write(collector: str, compose_services: dict[str, Any]):
    pipeline = COLLECTORS[collector]()
    mounts = compose_services[collector]["volumes"]
    for name in PYTHON_SERVICES:
        service = compose_services[name]
        log_dir = service["environment"]["TRACEHOP_LOG_DIR"]
        (written,) = [v for v in service["volumes"] if v["target"] == log_dir]
        host_file = Path(written["source"]) / f"{name}.log"
        seen = [v for v in mounts if Path(v.get("source", "")) == Path(written["source"])]
        assert seen, f"{collector} does not mount {written['source']}, where {name} writes {name}.log"
        assert all(v.get("read_only") for v in seen), f"{collector} must mount the logs read-only"
        inside = [str(PurePosixPath(v["target"]) / host_file.name) for v in seen]
        assert any(
            fnmatch.fnmatch(path, pattern) for path in inside for pattern in pipeline["path_patterns"]
        ), (
            f"{collector}: {name} writes {host_file.relative_to(REPO_ROOT)} (inside: {inside}), "
            f"which no pattern of {pipeline['path_patterns']} matches"
        )


@pytest.mark.parametrize("collector", COLLECTORS)
def test_collector_pushes_to_loki(collector: str, compose_services: dict[str, Any]):
    loki_port = yaml.safe_load(stack_files.LOKI_CONFIG.read_text())["server"]["http_listen_port"]
    for url in COLLECTORS[collector]()["push_urls"]:
        assert url == f"http://loki:{loki_port}/loki/api/v1/push", f"{collector} pushes to {url}"
    assert compose_services[collector]["depends_on"]["loki"]["condition"] == "service_healthy"


# ------------------------------------------------------------------ the fields the pipelines read exist


@pytest.mark.parametrize("collector", COLLECTORS)
def test_fields_read_are_fields_of_the_contract(collector: str):
    read = set(COLLECTORS[collector]()["json_fields"].values())
    assert read <= set(CONTRACT_LOG_FIELDS), f"{collector} reads {sorted(read - set(CONTRACT_LOG_FIELDS))}"


@pytest.mark.parametrize("collector", COLLECTORS)
def test_fields_read_exist_in_every_log_line(collector: str, sample_log_lines: dict[str, Any]):
    pipeline = COLLECTORS[collector]()
    source = sample_log_lines["source"]
    extracted = set(pipeline["json_fields"])
    for stage in ("labels", "structured_metadata"):
        unknown = set(pipeline[stage].values()) - extracted
        assert not unknown, (
            f"{collector}: the {stage} stage uses {sorted(unknown)}, which no json stage extracts"
        )
    for service, lines in sample_log_lines["by_service"].items():
        for number, line in enumerate(lines, 1):
            missing = [field for field in pipeline["json_fields"].values() if field not in line]
            assert not missing, (
                f"{collector} reads {missing}, absent from {service} line {number} ({source}): {line}"
            )


def test_log_lines_have_the_shape_the_pipeline_expects(sample_log_lines: dict[str, Any]):
    pipeline = stack_files.alloy_pipeline()
    ts_field, ts_format = pipeline["timestamp"]
    assert ts_format == "RFC3339Nano"
    for service, lines in sample_log_lines["by_service"].items():
        for line in lines:
            where = f"{service} line {line} ({sample_log_lines['source']})"
            # RFC 3339 in UTC with microseconds, as Go's RFC3339Nano layout parses it.
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)", line[ts_field]), (
                where
            )
            datetime.fromisoformat(line[ts_field])
            assert re.fullmatch(r"[0-9a-f]{32}|", line["trace_id"]), f"trace_id: {where}"
            assert re.fullmatch(r"[0-9a-f]{16}|", line["span_id"]), f"span_id: {where}"
            assert line["level"] in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"), (
                where
            )
            if service in PYTHON_SERVICES:
                # The `service` label comes from the field; the file a line is in must agree with it.
                assert line["service"] == service, (
                    f"logs/{service}.log holds a line of {line['service']}: {where}"
                )


def test_access_log_fields_the_dashboard_filters_on_exist(sample_log_lines: dict[str, Any]):
    access = [
        line
        for lines in sample_log_lines["by_service"].values()
        for line in lines
        if line.get("message") == "request"
    ]
    assert access, f"no access-log line (message 'request') in {sample_log_lines['source']}"
    used = set()
    for dashboard in stack_files.dashboards().values():
        for _, expr in stack_files.dashboard_queries(dashboard, "loki"):
            if "| json" in expr:
                used |= set(
                    re.findall(r"\|\s*(\w+)\s*(?:=~|!~|!=|==|=|>=|<=|>|<)", expr.split("| json", 1)[1])
                )
    assert used, "the dashboard's LogQL filters access-log fields after | json"
    for line in access:
        missing = used - set(line)
        assert not missing, f"the dashboard filters on {sorted(missing)}, absent from access-log line {line}"
