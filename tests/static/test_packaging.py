"""Building the project emits no warning, with the oldest and the newest build backend pyproject.toml allows.

`make install` builds the project (an editable wheel) with whatever setuptools [build-system].requires lets
the installer pick. setuptools announces what it will stop supporting as a deprecation warning first (the
`project.license` TOML table: "By 2027-Feb-18 ... your builds will no longer be supported"), so a warning
today is a broken install later. This test builds the sdist, a wheel from that sdist, and an editable wheel
the way an installer does (a fresh environment holding only the build requirements, the PEP 517 hooks
called in a subprocess) with every Python warning turned into an error, and also fails on any warning the
backend merely prints.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())

# The PEP 517 hooks as pip and uv call them: sdist from the tree, wheel from the unpacked sdist (which also
# proves the sdist is complete), editable wheel from the tree (what `make install` does).
BUILD_SCRIPT = r"""
import os, sys, tarfile, warnings
warnings.simplefilter("error")
tree, out = sys.argv[1], sys.argv[2]
os.chdir(tree)
from setuptools import build_meta as backend
from setuptools.warnings import InformationOnly
# setuptools' own "this is not a warning" class: every editable build notes how the import finder works.
warnings.filterwarnings("ignore", category=InformationOnly)
sdist = backend.build_sdist(out)
backend.build_editable(out)
with tarfile.open(os.path.join(out, sdist)) as archive:
    archive.extractall(os.path.join(out, "unpacked"), filter="data")
os.chdir(os.path.join(out, "unpacked", sdist[: -len(".tar.gz")]))
print("WHEEL", backend.build_wheel(out))
"""

# Python's warning classes (SetuptoolsDeprecationWarning, UserWarning, ...) and any deprecation notice a
# backend prints instead of raising. distutils' lower-case "warning: build_py: byte-compiling is disabled"
# (under PYTHONDONTWRITEBYTECODE) is a log line, not a warning of anything that will stop working.
WARNING_TEXT = re.compile(r"[A-Za-z]+Warning\b|deprecat", re.IGNORECASE)

# What the build environment must not inherit: it would change what the backend sees or prints.
UNSET_FOR_BUILD = ("PYTHONWARNINGS", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")


def build_requirement_variants() -> list[tuple[str, list[str]]]:
    """[build-system].requires as written (the installer picks the newest allowed) and at its lower bounds."""
    requires = PYPROJECT["build-system"]["requires"]
    oldest = []
    for text in requires:
        requirement = Requirement(text)
        floors = [spec.version for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
        assert floors, f"build requirement {text!r} has no lower bound: its oldest version is unknown"
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), (
            f"build requirement {text!r} has no upper bound: a future major release can break every install"
        )
        oldest.append(f"{requirement.name}=={max(floors, key=Version)}")
    return [("newest allowed", requires), ("oldest allowed", oldest)]


def make_build_env(env_dir: Path, requirements: list[str]) -> Path:
    """A virtualenv holding only the build requirements, as pip's and uv's build isolation makes one."""
    uv = shutil.which("uv")
    python = env_dir / "bin" / "python"
    if uv:
        commands = [
            [uv, "venv", "--quiet", "--python", sys.executable, str(env_dir)],
            [uv, "pip", "install", "--quiet", "--python", str(python), *requirements],
        ]
    else:
        commands = [
            [sys.executable, "-m", "venv", "--without-pip", str(env_dir)],
            [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", *requirements],
        ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
    return python


def copy_source_tree(destination: Path) -> Path:
    """The project's files without what a checkout accumulates (.venv, var/, caches): a clean clone's view."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "var", "logs", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", ".hyp*"
    )
    shutil.copytree(REPO_ROOT, destination, ignore=ignore, symlinks=True)
    return destination


@pytest.mark.parametrize(("label", "requirements"), build_requirement_variants(), ids=lambda v: str(v))
def test_building_the_project_emits_no_warning(label: str, requirements: list[str], tmp_path: Path) -> None:
    python = make_build_env(tmp_path / "build-env", requirements)
    tree = copy_source_tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in UNSET_FOR_BUILD}
    result = subprocess.run(
        [str(python), "-c", BUILD_SCRIPT, str(tree), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"building with {label} {requirements} failed:\n{output[-6000:]}"
    warnings = sorted({line.strip() for line in output.splitlines() if WARNING_TEXT.search(line)})
    assert not warnings, f"building with {label} {requirements} warned:\n" + "\n".join(warnings)

    # The license reaches the metadata the PEP 639 way: an SPDX expression and the file itself.
    wheel = out / re.search(r"^WHEEL (\S+)$", result.stdout, re.MULTILINE).group(1)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(name for name in names if name.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(metadata_name))
    assert metadata["License-Expression"] == PYPROJECT["project"]["license"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    # The trace viewer's templates and static files travel with its code.
    viewer = REPO_ROOT / "tracehop" / "traces" / "viewer"
    for folder in ("templates", "static"):
        for path in (viewer / folder).iterdir():
            assert path.relative_to(REPO_ROOT).as_posix() in names, f"{path.name} is missing from the wheel"


# --------------------------------------------------------------------------------- the install itself

INSTALL_SCRIPT = REPO_ROOT / "tools" / "install_venv.sh"


def run_install(tmp_path: Path, *packages: str) -> subprocess.CompletedProcess:
    """tools/install_venv.sh as the Makefile runs it, into a private venv and log."""
    env = {
        **os.environ,
        "VENV": str(tmp_path / "venv"),
        "PYTHON": sys.executable,
        "UV": shutil.which("uv") or "",
        "INSTALL_LOG": str(tmp_path / "install.log"),
    }
    return subprocess.run(
        [str(INSTALL_SCRIPT), "the stack", *packages], env=env, capture_output=True, text=True, timeout=600
    )


def locked_versions() -> dict[str, str]:
    pins = re.findall(
        r"^([A-Za-z0-9._-]+)==(\S+)", (REPO_ROOT / "requirements.lock").read_text(), re.MULTILINE
    )
    return {canonicalize_name(name): version for name, version in pins}


def test_the_stack_install_prints_one_line_and_installs_no_test_tool(tmp_path: Path) -> None:
    result = run_install(tmp_path, "--editable", ".")
    log = (tmp_path / "install.log").read_text()

    assert result.returncode == 0, log
    assert re.fullmatch(
        r"Installing the stack into \S+ \(log: \S+install\.log\) \.\.\. done in \d+ s\n", result.stdout
    )
    assert result.stderr == ""
    listing = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "python"), "-c", LIST_DISTRIBUTIONS], capture_output=True, text=True
    )
    installed = dict(line.split("==") for line in listing.stdout.split())
    extras = PYPROJECT["project"]["optional-dependencies"]
    dev_only = {canonicalize_name(Requirement(text).name) for text in extras["test"] + extras["dev"]}
    dev_only.discard("tracehop")  # the dev extra pulls the test extra in by naming the project
    assert not dev_only & set(installed), "make up installed test or development tools"
    runtime = {canonicalize_name(Requirement(text).name) for text in PYPROJECT["project"]["dependencies"]}
    assert runtime <= set(installed)
    # Every package at exactly the version the lock pins (the project itself is not in the lock).
    pins = locked_versions()
    assert {name: version for name, version in installed.items() if name != "tracehop"} == {
        name: pins[name] for name in installed if name != "tracehop"
    }


def test_a_failed_install_names_its_log_and_shows_its_end(tmp_path: Path) -> None:
    result = run_install(tmp_path, "--editable", "./no-such-directory")

    assert result.returncode != 0
    log = tmp_path / "install.log"
    assert result.stdout.startswith("Installing the stack into ") and "FAILED" in result.stdout
    assert f"the whole output of the installer is in {log}" in result.stdout
    assert "no-such-directory" in result.stdout  # the installer's own error, from the log's last lines


LIST_DISTRIBUTIONS = """
import importlib.metadata as metadata, re
for dist in metadata.distributions():
    name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    if name not in ("pip", "setuptools"):
        print(f"{name}=={dist.version}")
"""


@pytest.mark.parametrize(
    ("target", "dev"), [("up", False), ("trace", False), ("test", True), ("install", True)]
)
def test_make_installs_the_dev_extra_only_for_development_targets(target: str, dev: bool) -> None:
    # -n: print the recipes, run nothing; -B: as on a fresh clone, every install step is due.
    plan = subprocess.run(
        ["make", "-n", "-B", target], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert plan.returncode == 0, plan.stderr
    installs = [line for line in plan.stdout.splitlines() if "install_venv.sh" in line]
    assert installs and all("--editable" in line for line in installs)
    assert any("'.[dev]'" in line for line in installs) == dev
