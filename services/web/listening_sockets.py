"""Which listening TCP sockets the kernel holds on a port, and which of them a process holds: read from
/proc (Linux), without a library. Empty answers elsewhere.

A gunicorn worker of ours listens only while it accepts (services/web/worker_listeners.py), so "a process
holds a listening socket on the service's port" means "it serves": the orphan watch and `make status`
both ask that.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def listening_inodes(port: int) -> set[int]:
    """The socket inodes of every TCP listener on `port` (any address, IPv4 and IPv6) in this network
    namespace."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets `pid` has open (empty when it is gone or not ours to read)."""
    inodes = set()
    try:
        fds = list((_PROC / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def listens_on(pid: int, port: int) -> bool:
    """Whether `pid` holds a listening socket on `port`."""
    return bool(socket_inodes(pid) & listening_inodes(port))
