"""The gateway's gunicorn worker: gevent, so a waiting client costs a greenlet, not a thread; with limits.

gunicorn's `gthread` worker gives each request a thread while it waits for the rest of the request: eight
clients that trickle their headers held all 2 × 4 threads and the gateway answered no one (issue 16).
Under gevent a waiting client holds only a greenlet (a few KiB), and this worker adds the limits a
public door needs (services/web/door_limits.py):

- the request line and headers must arrive within the header timeout, the body within the body timeout;
  otherwise 408 and the connection closes (an idle keep-alive connection closes without an answer);
- the body is read completely (up to BUFFERED_BODY_BYTES) BEFORE the application runs, so a request
  reaches Flask, and its trace begins, only once it is all there;
- at most `max_connections` connections per process: one more is answered 503 and closed.

Only HTTP/1.x without TLS is served (the gateway's port; TLS ends in front of it, if anywhere).

Like users' worker it listens only while it accepts (services/web/worker_listeners.py) and serves on when
its master dies (services/web/orphan_watch.py). gunicorn's gevent worker instead exits as soon as its
parent changes (in `notify`), which left the gateway without an answer for ~5 s after its master was
SIGKILLed. So `notify` here only heartbeats and asks the orphan watch, and `run` is gunicorn's
GeventWorker.run (the method gunicorn documents for a worker class to override) for our case — a
StreamServer per listener, no TLS — with the listener opened at its start and closed first when stopping.
"""

from __future__ import annotations

import errno
import io
import socket
import time
from functools import partial

import gevent
import gevent.socket
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.socket import wait_read
from gunicorn import http, util
from gunicorn.workers.base import Worker
from gunicorn.workers.ggevent import GeventWorker

from services.metrics.door_metrics import OPEN_CONNECTIONS, REFUSED_CONNECTIONS
from services.web.door_limits import (
    BUFFERED_BODY_BYTES,
    REFUSAL_HEADROOM,
    DoorLimits,
    json_error_response,
)
from services.web.orphan_watch import OrphanWatch
from services.web.worker_listeners import ListensWhenReady, accept_queued

_QUIET_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)
# How long a refusal may take to write, and to let the client's request drain before closing (closing
# with unread bytes would reset the connection and the client could lose the answer).
_REFUSAL_WRITE_S = 1.0
_LINGER_S = 0.5


class _SlowRequest(Exception):
    """The client did not send its headers or body within the limit."""


class PublicDoorWorker(ListensWhenReady, GeventWorker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = DoorLimits.from_env()
        # gevent's pool stops accepting when full; it holds a little more than the limit so that the
        # connections over the limit are accepted, answered 503 and closed instead of left waiting.
        self.worker_connections = self.limits.max_connections + REFUSAL_HEADROOM
        self.open_connections = 0

    def notify(self) -> None:
        Worker.notify(self)  # the heartbeat only: GeventWorker.notify would exit with the master
        if self.alive and not self.orphan_watch.keep_serving():
            self.alive = False

    def run(self) -> None:
        self.orphan_watch = OrphanWatch(self)
        # gevent patched the socket module in init_process: the listeners opened now are gevent's.
        self.sockets = [_plain_gevent_socket(listener) for listener in self.listen_now()]
        servers = []
        for listener in self.sockets:
            listener.setblocking(1)
            # The name, not the socket: a connection accepted as the worker stops is served after its
            # listener closed (leave_port), and a closed socket has no name to ask.
            server = StreamServer(
                listener,
                handle=partial(self.handle, listener.getsockname()),
                spawn=Pool(self.worker_connections),
            )
            if self.cfg.workers > 1:
                server.max_accept = 1  # as gunicorn does: leave the next connection to a sibling worker
            server.start()
            servers.append(server)

        while self.alive:
            self.notify()
            gevent.sleep(1.0)

        for server in servers:
            leave_port(server)
        # Then finish the requests in hand, up to the graceful timeout (as GeventWorker.run).
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline and any(
            server.pool.free_count() != server.pool.size for server in servers
        ):
            self.notify()
            gevent.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        for server in servers:
            if server.pool.free_count() != server.pool.size:
                self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
                server.pool.kill(timeout=1)

    def handle(self, listener_name, client, addr) -> None:
        client.setblocking(1)
        if self.open_connections >= self.limits.max_connections:
            REFUSED_CONNECTIONS.labels(reason="over_capacity").inc()
            message = "the gateway has too many open connections; retry shortly"
            _refuse(client, json_error_response(503, "over_capacity", message))
            return
        self.open_connections += 1
        OPEN_CONNECTIONS.inc()
        try:
            self._serve(listener_name, client, addr)
        finally:
            self.open_connections -= 1
            OPEN_CONNECTIONS.dec()
            util.close(client)

    def _serve(self, listener_name, client, addr) -> None:
        req = None
        parser = http.get_parser(self.cfg, client, addr)
        # A new connection's first request must be complete within the header timeout of the connection
        # opening; a later one may first wait for the keep-alive timeout, then has the header timeout.
        opened = time.monotonic()
        first = True
        try:
            # A new connection's first request is answered even when the worker is stopping: the client
            # connected while the listener was still open (worker_listeners.accept_queued).
            while first or self.alive:
                req = None
                idle_limit = self.limits.header_timeout_s if first else self.cfg.keepalive
                if not self._wait_for_bytes(client, parser, idle_limit, even_when_stopping=first):
                    return  # idle, or the worker stops: nothing of a request arrived, nothing to answer
                header_budget = self.limits.header_timeout_s
                if first:
                    header_budget -= time.monotonic() - opened
                    first = False
                req = self._read_request(client, parser, max(header_budget, 0.001))
                if req is None:
                    return
                self.handle_request(listener_name, req, client, addr)
        except (StopIteration, http.errors.NoMoreData):
            return
        except OSError as error:
            if error.errno not in _QUIET_ERRNOS:
                self.log.exception("Socket error processing request.")
        except Exception as error:
            # A malformed request: gunicorn's own answer (400, 414, 431, …), as on every other worker.
            self.handle_error(req, client, addr, error)

    def _wait_for_bytes(
        self, client: socket.socket, parser, timeout: float, even_when_stopping: bool
    ) -> bool:
        """Whether bytes of a request are there (read ahead, or readable) within `timeout`. Unless
        `even_when_stopping`, wakes every second to see whether the worker is stopping: an idle keep-alive
        connection must not delay its exit."""
        if parser.unreader.buf.getbuffer().nbytes:
            return True
        deadline = time.monotonic() + timeout
        while (self.alive or even_when_stopping) and (remaining := deadline - time.monotonic()) > 0:
            try:
                wait_read(client.fileno(), timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
            return True
        return False

    def _read_request(self, client: socket.socket, parser, header_budget: float):
        """The next request with its body buffered, or None after answering 408 to a slow one."""
        try:
            with gevent.Timeout(header_budget, _SlowRequest("header_timeout")):
                req = next(parser)
            if req._expected_100_continue:
                # The client waits for this before it sends the body we are about to read; gunicorn
                # would send it only once the application runs, after the body.
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                req._expected_100_continue = False
            with gevent.Timeout(self.limits.body_timeout_s, _SlowRequest("body_timeout")):
                req.body = _buffered(req.body)
        except _SlowRequest as slow:
            (reason,) = slow.args
            REFUSED_CONNECTIONS.labels(reason=reason).inc()
            part = "headers" if reason == "header_timeout" else "body"
            limit = self.limits.header_timeout_s if reason == "header_timeout" else self.limits.body_timeout_s
            message = f"the request's {part} did not arrive within {limit:g} s"
            _refuse(client, json_error_response(408, "request_timeout", message), linger=False)
            return None
        return req


def leave_port(server: StreamServer) -> None:
    """Leave the port's group: stop accepting, hand what the kernel already queued for this listener to the
    server's handler, then close the listener (worker_listeners.py).

    The hand-off is gevent's own (`do_read`, `do_handle`, what its accept loop runs): StreamServer keeps
    the raw stdlib socket under gevent's, which has `_accept` but no `accept`, and calling `accept` on it
    made an orphan that found a connection queued as it stopped crash out of `run` with its listener still
    open and its requests unfinished. The close is in a `finally` for any such failure: a listener left
    open while the process goes down resets every connection the kernel queues on it meanwhile.
    """
    server.stop_accepting()
    try:
        accept_queued(server.socket, lambda _listener: _accept_one(server))
    finally:
        server.socket.close()


def _accept_one(server: StreamServer) -> None:
    accepted = server.do_read()  # (client socket, address), or None when nothing was there after all
    if accepted:
        server.do_handle(*accepted)  # spawned in the server's pool, as a connection accepted earlier


def _plain_gevent_socket(listener) -> socket.socket:
    """gunicorn's socket wrapper as the plain gevent socket StreamServer expects (GeventWorker.patch does
    the same to the sockets it inherits)."""
    return gevent.socket.socket(listener.FAMILY, socket.SOCK_STREAM, fileno=listener.sock.detach())


class _PrefixedBody:
    """A request body whose first bytes were read ahead: those, then whatever the client still sends."""

    def __init__(self, head: bytes, rest) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest

    def read(self, size: int | None = None) -> bytes:
        data = self._head.read(size) if size is not None and size >= 0 else self._head.read()
        if size is None or size < 0:
            return data + self._rest.read()
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data

    def readline(self, size: int | None = None) -> bytes:
        line = self._head.readline(size if size is not None else -1)
        if line.endswith(b"\n") or (size is not None and 0 <= size <= len(line)):
            return line
        remaining = None if size is None or size < 0 else size - len(line)
        return line + self._rest.readline(remaining)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")


def _buffered(body):
    """The body, read into memory up to BUFFERED_BODY_BYTES (the rest, if any, stays on the socket)."""
    chunks = []
    size = 0
    while size <= BUFFERED_BODY_BYTES:
        chunk = body.read(min(8192, BUFFERED_BODY_BYTES + 1 - size))
        if not chunk:
            return io.BytesIO(b"".join(chunks))
        chunks.append(chunk)
        size += len(chunk)
    return _PrefixedBody(b"".join(chunks), body)


def _refuse(client: socket.socket, response: bytes, linger: bool = True) -> None:
    """Write `response` and close; with `linger`, first let the client's request arrive (briefly), so that
    closing does not reset the connection before the client read the answer."""
    try:
        with gevent.Timeout(_REFUSAL_WRITE_S, False):
            client.sendall(response)
        client.shutdown(socket.SHUT_WR)
        if linger:
            deadline = time.monotonic() + _LINGER_S
            with gevent.Timeout(_LINGER_S, False):
                while time.monotonic() < deadline and client.recv(65536):
                    pass
    except OSError:
        pass
    finally:
        util.close(client)
