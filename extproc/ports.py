"""Whether a TCP port is free, and which process holds it (from Linux's /proc).

The supervisor checks every port before it starts anything: a process left over
from an earlier run that listens with SO_REUSEPORT (gRPC's default, Envoy's
listeners) would otherwise share the port silently and answer with an old config.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_LISTEN = "0A"  # TCP state in /proc/net/tcp


class PortInUse(OSError):
    """Ports the gateway needs are held by other processes."""

    def __init__(self, busy: dict[int, str]) -> None:
        self.ports = sorted(busy)
        lines = [f"port {port} ({what}) is already in use{_by(port)}" for port, what in sorted(busy.items())]
        super().__init__("; ".join(lines) + "; stop that process or choose another port")


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``port``: a bind without SO_REUSEPORT fails on any listener."""
    with socket.socket() as s:
        # Connections left in TIME_WAIT by an earlier run do not make a port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before (tests, benchmarks).

    The kernel may give the same ephemeral port to two ``bind(0)`` calls in a row once the
    first socket is closed, so a config asking for several free ports could get one twice
    (seen in CI: Envoy refused a metrics listener on another listener's port).
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def check_free(needed: dict[int, str], host: str = "127.0.0.1") -> None:
    """Raise PortInUse naming every busy port of ``needed`` (port -> what it is for)."""
    busy = {port: what for port, what in needed.items() if not is_free(port, host)}
    if busy:
        raise PortInUse(busy)


def listening_pids(port: int) -> list[int]:
    """Processes with a socket listening on ``port`` (those /proc lets this user see)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    targets = {f"socket:[{inode}]" for inode in inodes}
    pids: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in targets for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:  # another user's process, or gone meanwhile
            continue
    return sorted(pids)


def command_line(pid: int, limit: int = 160) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    # One line: a ``python -c`` script's newlines would break the error message apart.
    text = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def holder(port: int) -> str | None:
    """``pid 123 (python -m extproc ...)`` for each process listening on ``port``, if /proc tells."""
    pids = listening_pids(port)
    return ", ".join(f"pid {pid} ({command_line(pid)})" for pid in pids) or None


def _by(port: int) -> str:
    who = holder(port)
    return f" by {who}" if who else " (by a process /proc does not show to this user)"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes
