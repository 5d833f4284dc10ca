"""Talk to a running supervisord over its unix socket (the XML-RPC API that supervisorctl uses).

The structured answers (state names, pids) spare us parsing `supervisorctl status` text.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SupervisorUnavailable(ConnectionError):
    """No supervisord answers on the socket."""


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    state: str  # supervisor's state name: STARTING, RUNNING, BACKOFF, EXITED, FATAL, STOPPED, ...
    pid: int  # 0 when not running
    description: str  # "pid 123, uptime 0:01:02" or the reason it is not running

    @property
    def is_running(self) -> bool:
        return self.state == "RUNNING"


class _UnixSocketConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixSocketTransport(xmlrpc.client.Transport):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__()
        self._socket_path = socket_path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixSocketConnection(self._socket_path, self._timeout)


class SupervisorClient:
    """A few calls of supervisord's API, each failing with SupervisorUnavailable when nobody answers."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self._timeout = timeout

    def _call(self, method: str, *args: Any) -> Any:
        # A fresh proxy per call: no connection is left half-used after an error.
        proxy = xmlrpc.client.ServerProxy(
            "http://localhost", transport=_UnixSocketTransport(str(self.socket_path), self._timeout)
        )
        try:
            return getattr(proxy, method)(*args)
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as error:
            raise SupervisorUnavailable(f"no supervisord answers on {self.socket_path}: {error}") from error

    def is_alive(self) -> bool:
        try:
            return self._call("supervisor.getState")["statename"] == "RUNNING"
        except SupervisorUnavailable:
            return False

    def pid(self) -> int:
        return int(self._call("supervisor.getPID"))

    def processes(self) -> list[ProcessInfo]:
        return [
            ProcessInfo(
                name=info["name"],
                state=info["statename"],
                pid=int(info["pid"]),
                description=info["description"],
            )
            for info in self._call("supervisor.getAllProcessInfo")
        ]

    def process(self, name: str) -> ProcessInfo | None:
        """The program `name`'s process, None when supervisord runs no program of that name."""
        return next((info for info in self.processes() if info.name == name), None)

    def stop_program(self, name: str) -> None:
        """Stop one program (its whole process group) and wait until it is down."""
        self._call("supervisor.stopProcess", name, True)

    def start_program(self, name: str) -> None:
        """Start one stopped program and wait until it counts as started (its startsecs)."""
        self._call("supervisor.startProcess", name, True)

    def shutdown(self) -> None:
        """Ask supervisord to stop every program (each with its stopwaitsecs) and then exit."""
        self._call("supervisor.shutdown")
