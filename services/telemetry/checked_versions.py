"""The guard for our replacements of an instrumentation's internals (which are not its API): a module
that replaces some declares the distributions and versions it was checked against, and refuses to run,
at start-up, beside any other version — rather than quietly changing spans after an upgrade."""

from __future__ import annotations

from importlib.metadata import version


def require_checked_versions(replacement: str, checked: dict[str, str]) -> None:
    """RuntimeError unless every distribution in `checked` is installed at exactly its checked version."""
    wrong = {name: version(name) for name in checked if version(name) != checked[name]}
    if wrong:
        raise RuntimeError(
            f"{replacement} replaces internals of {checked}, but {wrong} is installed: check the "
            "replacement against the new version (and its differential test), then update CHECKED_VERSIONS"
        )
