"""The compose path of `make up`: the secrets file it creates and the env files it hands to compose."""

from __future__ import annotations

import stat

from tracehop.stack import compose


def test_local_env_is_created_once_with_a_private_random_password(tmp_path, monkeypatch):
    target = tmp_path / ".env.local"
    monkeypatch.setattr(compose, "LOCAL_ENV", target)
    password = compose.ensure_local_env()
    assert password and len(password) >= 20
    assert f"GRAFANA_ADMIN_PASSWORD={password}" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # A second `make up` keeps the password a person may already use.
    assert compose.ensure_local_env() is None
    assert f"GRAFANA_ADMIN_PASSWORD={password}" in target.read_text()


def test_compose_gets_both_env_files_and_the_callers_uid(tmp_path, monkeypatch):
    local = tmp_path / ".env.local"
    local.write_text("GRAFANA_ADMIN_PASSWORD=x\n")
    monkeypatch.setattr(compose, "LOCAL_ENV", local)
    seen = {}

    def fake_run(argv, **kwargs):
        seen["argv"], seen["env"] = argv, kwargs["env"]
        return compose.subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(compose.subprocess, "run", fake_run)
    compose._compose("config", "-q")
    argv = seen["argv"]
    assert argv[argv.index("--env-file") + 1] == str(compose.VERSIONS_ENV)
    assert str(local) in argv and argv.index(str(local)) > argv.index(str(compose.VERSIONS_ENV))
    assert seen["env"]["TRACEHOP_UID"].isdigit()
