"""A gunicorn worker's listening sockets: opened only once it accepts, closed as soon as it stops.

gunicorn 27 with `reuse_port` gives each WORKER a listening socket of its own (SO_REUSEPORT; the master
binds none), opened right after the fork, before the worker imports the application. The kernel spreads
new connections over every listener on the port by a hash of the connection, so:

- a worker that boots (after its master was killed, or replacing a dead worker) receives its share of new
  connections while it imports the app — seconds on a loaded machine — and they wait in its backlog: a
  client with a 1 s timeout sees no answer. That was most of users' "2.16 s unavailable" in `make chaos`;
- a worker that stops gracefully stops accepting but keeps its socket open while it finishes its
  requests (up to `graceful_timeout`): the connections the kernel keeps handing that socket are never
  accepted and are reset when it closes.

So a worker of ours gives its early sockets back at once (post_fork), opens them again when it is about to
accept (run), and when it stops, accepts what is already queued, then closes them before finishing its
requests. What stays: a connection the kernel queued for a socket in the moment between the last
accept and the close (or between gunicorn opening the socket and post_fork) is reset — microseconds, or
as long as the process is descheduled there on a loaded machine (docs/reliability.md). The kernel could
hand those to another listener (`net.ipv4.tcp_migrate_req=1`, Linux ≥ 5.14; off by default).
"""

from __future__ import annotations

import select

from gunicorn import sock, util


class ListensWhenReady:
    """Mixed into our gunicorn worker classes; `sockets`, `cfg` and `log` are gunicorn's Worker's."""

    def withdraw_listeners(self) -> None:
        """Called first thing in post_fork: close the sockets gunicorn opened for this worker before it
        loaded the app, so the kernel queues no connection on them meanwhile."""
        sock.close_sockets(self.sockets, unlink=False)
        self.sockets = []

    def listen_now(self) -> list:
        """Listening sockets for the configured addresses, SO_REUSEPORT as gunicorn opens them (a new
        member of the port's group from now on)."""
        listeners = sock.create_sockets(self.cfg, self.log)
        for listener in listeners:
            util.close_on_exec(listener)
        return listeners


def accept_queued(listener, accept_one, limit: int = 1024) -> None:
    """Hand every connection already queued on `listener` to `accept_one(listener)`; called before the
    listener closes, since closing it resets them."""
    for _ in range(limit):
        readable, _, _ = select.select([listener], [], [], 0)
        if not readable:
            return
        accept_one(listener)
