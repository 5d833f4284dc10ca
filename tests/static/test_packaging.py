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
