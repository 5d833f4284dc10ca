"""Redis keeps what it acknowledged through a SIGKILL, with the stack's settings, even when the disk is slow.

Why this exists: a short `make chaos` once lost one accepted job while Redis was SIGKILLed. With
`appendfsync everysec`, Redis fsyncs its append-only file on a background thread; while that fsync is slow
(a busy disk), it postpones WRITING the file for up to 2 s — and still replies to its clients. A SIGKILL
in that moment loses writes it already acknowledged: the gateway's LPUSH of a job and its ledger record,
so the client holds a 201 for a job no one has.

The slow disk is made exact: an LD_PRELOAD shim makes fsync/fdatasync sleep 3 s on every thread but the
main one (where `appendfsync always` syncs, before replying). The test writes, waits until the background
fsync is surely running, writes 200 more acknowledged LPUSHes, SIGKILLs the server, restarts it on the same
files and counts. With `--appendfsync everysec` it finds 0 of 200 (checked); with the stack's settings
(`REDIS_DURABILITY_ARGS`) all 200.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.valkey_process import valkey_binary
from tracehop.stack.supervisord_conf import REDIS_DURABILITY_ARGS

SLOW_BACKGROUND_FSYNC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>
static int slow(void) { if (syscall(SYS_gettid) != getpid()) sleep(3); return 0; }
int fsync(int fd) { slow(); return ((int (*)(int))dlsym(RTLD_NEXT, "fsync"))(fd); }
int fdatasync(int fd) { slow(); return ((int (*)(int))dlsym(RTLD_NEXT, "fdatasync"))(fd); }
"""


@pytest.fixture(scope="module")
def slow_fsync_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler (cc) is needed to build the slow-fsync shim: apt-get install gcc")
    directory = tmp_path_factory.mktemp("shim")
    source = directory / "slow_fsync.c"
    source.write_text(SLOW_BACKGROUND_FSYNC)
    library = directory / "slow_fsync.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source), "-ldl"], check=True)
    return library


def _start(data_dir: Path, port: int, args: tuple[str, ...], preload: Path | None) -> subprocess.Popen:
    env = {"LD_PRELOAD": str(preload)} if preload else {}
    command = [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=10)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("valkey-server did not start") from None
            time.sleep(0.02)


def acknowledged_writes_kept(tmp_path: Path, args: tuple[str, ...], shim: Path) -> int:
    """How many of 200 acknowledged LPUSHes a SIGKILL during a slow background fsync leaves."""
    port = free_port()
    server = _start(tmp_path, port, args, shim)
    client = redis.Redis(port=port, socket_timeout=10)
    try:
        client.set("first", "1")  # something for the once-a-second background fsync to sync
        time.sleep(1.5)  # that fsync has started by now and sleeps 3 s
        for index in range(200):
            assert client.lpush("celery", f"job-{index}")  # each one acknowledged by the server
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    restarted = _start(tmp_path, port, args, None)
    try:
        return int(redis.Redis(port=port).llen("celery"))
    finally:
        restarted.terminate()
        restarted.wait(timeout=10)


def test_the_stacks_redis_keeps_every_acknowledged_write_through_a_sigkill(tmp_path, slow_fsync_shim):
    assert acknowledged_writes_kept(tmp_path, tuple(REDIS_DURABILITY_ARGS), slow_fsync_shim) == 200


def test_everysec_would_lose_acknowledged_writes(tmp_path, slow_fsync_shim):
    """The reason for the setting, and proof the shim makes the bad moment: everysec loses them."""
    everysec = ("--save", "", "--appendonly", "yes", "--appendfsync", "everysec")
    assert acknowledged_writes_kept(tmp_path, everysec, slow_fsync_shim) < 200
