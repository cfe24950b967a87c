"""A TCP relay between Envoy and a mock provider that breaks the provider's connection on purpose.

Tests point a route's ``hostOverride`` at the relay and set ``relay.fault`` before a request:
after the provider's response headers and ``after`` more bytes, the relay

- ``fin``: closes both connections cleanly (the provider "hung up" mid-answer),
- ``rst``: resets the connection to Envoy (SO_LINGER 0), as a crashed peer or a middlebox does,
- ``stall``: forwards nothing more but keeps both connections open (a provider gone silent).

Bytes are counted per connection from the start of each response, so pooled connections that
Envoy reuses are handled; ``None`` passes everything through.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    kind: str  # fin, rst, stall
    after: int  # body bytes of the response that still go through


class Relay:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.fault: Fault | None = None
        self.cuts = 0  # how many times the fault was applied
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._server.close()
        with self._lock:
            socks, self._open = list(self._open), set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self._server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                down.close()
                continue
            with self._lock:
                self._open |= {down, up}
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()

    def _pump(self, down: socket.socket, up: socket.socket) -> None:
        """Both directions of one connection in one thread, so a cut closes sockets no other
        thread is blocked on (a close would not wake it, and SO_LINGER 0 needs the last close)."""
        state = _Conn()
        with selectors.DefaultSelector() as sel:
            sel.register(down, selectors.EVENT_READ, "request")
            sel.register(up, selectors.EVENT_READ, "response")
            while not self._closed:
                for key, _ in sel.select(timeout=0.5):
                    data = _recv(key.fileobj)  # type: ignore[arg-type]
                    if key.data == "request":
                        if not data or not _send(up, data):
                            return _close(down, up)
                        state.new_response()  # a new request starts a new response count
                    elif not self._response(data, up, down, state, sel):
                        return None
        return _close(down, up)

    def _response(
        self, data: bytes, up: socket.socket, down: socket.socket, state: _Conn, sel: selectors.BaseSelector
    ) -> bool:
        """Provider -> Envoy; False once this connection is done."""
        if not data:
            _close(down, up)
            return False
        fault = self.fault
        if fault is None:
            return _send(down, data) or _close(down, up)
        keep, cut = state.take(data, fault.after)
        if keep and not _send(down, keep):
            return _close(down, up)
        if not cut:
            return True
        self.cuts += 1
        if fault.kind == "stall":
            sel.unregister(up)  # nothing more goes to Envoy; both stay open until the relay closes
            return True
        if fault.kind == "rst":
            down.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return _close(down, up)


def _close(*socks: socket.socket) -> bool:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()
    return False


class _Conn:
    """Where one connection is in its current response: headers seen, body bytes passed."""

    def __init__(self) -> None:
        self._head = b""
        self._body = -1  # body bytes passed; -1 while the headers are still coming
        self._lock = threading.Lock()

    def new_response(self) -> None:
        with self._lock:
            self._head, self._body = b"", -1

    def take(self, data: bytes, after: int) -> tuple[bytes, bool]:
        """The part of ``data`` to forward, and whether the fault applies after it."""
        with self._lock:
            keep = b""
            if self._body < 0:
                self._head += data
                end = self._head.find(b"\r\n\r\n")
                if end < 0:
                    return data, False
                body = self._head[end + 4 :]
                keep = data[: len(data) - len(body)]
                data, self._body = body, 0
            room = after - self._body
            if len(data) < room:
                self._body += len(data)
                return keep + data, False
            self._body = after
            return keep + data[: max(room, 0)], True


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


def _send(s: socket.socket, data: bytes) -> bool:
    try:
        s.sendall(data)
        return True
    except OSError:
        return False
