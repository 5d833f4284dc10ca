"""The public door leaving the port as it stops (services/web/public_door.py, `leave_port`): a connection
the kernel queued on the listener before it closed is answered, not reset, and the listener is closed
even when handing a connection over fails.

Real sockets and gevent's own StreamServer, in a fresh interpreter (gevent's hub must not leak into the
test process). Before the fix the hand-off called `accept` on the raw socket StreamServer keeps, which has
none: the orphaned gateway worker that found a connection queued as it stopped crashed with its listener
open (test_master_recovery.py's rare `ConnectionResetError`s).
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

_STOPPING_DOOR = """
import socket, sys
import gevent, gevent.socket
from gevent.pool import Pool
from gevent.server import StreamServer
from services.web.public_door import leave_port

def answer(client, address):
    client.recv(64)
    client.sendall(b"answered")

listener = gevent.socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
port = listener.getsockname()[1]
server = StreamServer(listener, handle=answer, spawn=Pool(4))
server.start()
server.stop_accepting()  # as a stopping worker: the kernel still queues connections for the listener

# Plain blocking sockets: the kernel completes the handshake with nobody accepting.
queued = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
for client in queued:
    client.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
if sys.argv[1] == "handoff-fails":
    def fail():
        raise RuntimeError("hand-off failed")
    server.do_read = fail
try:
    leave_port(server)
except RuntimeError as error:
    print("raised:", error)
server.pool.join(timeout=5)
for client in queued:
    try:
        print("queued:", client.recv(64).decode() or "closed")
    except OSError as error:
        print("queued:", type(error).__name__)
try:
    socket.create_connection(("127.0.0.1", port), timeout=5)
    print("after: connected")
except ConnectionRefusedError:
    print("after: refused")
"""


def stopping_door(case: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _STOPPING_DOOR, case],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_connections_queued_as_the_door_stops_are_answered_and_the_listener_closes():
    assert stopping_door("plain") == ["queued: answered", "queued: answered", "after: refused"]


def test_the_listener_closes_even_when_the_hand_off_fails():
    lines = stopping_door("handoff-fails")
    assert lines[0] == "raised: hand-off failed"
    # Queued connections are lost with the listener (reset), but nobody is left queueing on it.
    assert lines[-1] == "after: refused", lines
