"""The users client's retry policy, against real sockets: one retry for a stale pooled connection, none
for a timeout (TRACEHOP_USERS_TIMEOUT bounds a whole call), none for a POST.

The end-to-end version — a hung users service behind a real gateway and worker — is in
tests/integration/test_faults_dependencies.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from services.clients.users_client import CONNECT_TIMEOUT_S, UsersClient, UsersUnavailable
from tests.integration.fault_tools import BlackHole
from tracehop.stack.config import free_port

USER = b'{"id": 1, "name": "A", "email": "a@example.org"}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
    b"Content-Length: " + str(len(USER)).encode() + b"\r\n\r\n" + USER
)
CALL_ARGS = {"get_user": (1,), "create_user": ("A", "a@example.org")}


class ClosesReusedConnections:
    """An HTTP server that answers the first request on each connection and closes the connection,
    unanswered, when a second request arrives on it: a keep-alive connection closed by the server just
    as the client reuses it (gunicorn's keep-alive timeout racing a pooled connection)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests = 0
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                self._read_request(connection)
                self.requests += 1
                connection.sendall(ANSWER)
                self._read_request(connection)  # the reuse: closed without an answer

    @staticmethod
    def _read_request(connection: socket.socket) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            if not chunk:
                return
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return
            body += chunk

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def closing_server() -> Iterator[ClosesReusedConnections]:
    server = ClosesReusedConnections()
    yield server
    server.close()


def client_for(port: int, timeout_s: float = 5.0) -> UsersClient:
    return UsersClient(base_url=f"http://127.0.0.1:{port}", token="t", timeout_s=timeout_s)


def test_a_get_on_a_connection_closed_as_it_is_reused_is_retried_once(closing_server):
    client = client_for(closing_server.port)
    assert client.get_user(1)["id"] == 1
    assert client.get_user(1)["id"] == 1  # the pooled connection dies unanswered; a fresh one answers
    assert (closing_server.connections, closing_server.requests) == (2, 2)


def test_a_post_is_never_retried_even_on_a_stale_connection(closing_server):
    client = client_for(closing_server.port)
    client.create_user("A", "a@example.org")
    with pytest.raises(UsersUnavailable):  # a retry could create the user twice
        client.create_user("A", "a@example.org")
    assert closing_server.connections == 1


@pytest.mark.parametrize("call", ["get_user", "create_user"])
def test_a_users_service_that_never_answers_costs_one_timeout_not_two(call):
    # A retried timeout would make a hung users service cost its callers twice TRACEHOP_USERS_TIMEOUT;
    # counting the connections says so without timing anything.
    port = free_port()
    with BlackHole(port) as hole:
        client = client_for(port, timeout_s=0.2)
        with pytest.raises(UsersUnavailable, match="ReadTimeout"):
            getattr(client, call)(*CALL_ARGS[call])
        assert not client.is_healthy()  # /readyz's probe: the same single attempt
        assert hole.connections == 2


@pytest.mark.parametrize("call", ["get_user", "create_user"])
def test_a_refused_connection_is_users_unavailable(call):
    client = client_for(free_port())  # nothing listens there: users is down
    with pytest.raises(UsersUnavailable, match="ConnectionError"):
        getattr(client, call)(*CALL_ARGS[call])
    assert not client.is_healthy()


def test_a_connection_that_is_never_accepted_costs_one_connect_timeout():
    # A listener whose accept queue is full: the kernel drops further SYNs, as an unreachable host does.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as server:
        port = server.getsockname()[1]
        waiting = [socket.create_connection(("127.0.0.1", port), timeout=1)]  # fills the queue
        client = client_for(port)
        started = time.monotonic()
        with pytest.raises(UsersUnavailable, match="ConnectTimeout"):
            client.get_user(1)
        # Not a speed target: a retried connect would wait a second CONNECT_TIMEOUT_S in full.
        assert time.monotonic() - started < 1.9 * CONNECT_TIMEOUT_S
        for connection in waiting:
            connection.close()
