"""Loopback helpers for the Toxiproxy tests: our server in-process, and small TCP peers.

Every socket binds port 0; every server thread is joined and every connection closed
on exit, so tests run in parallel and leave nothing behind.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable

import pytest

from faults.toxiproxy import ToxiproxyServer


class TcpPeer:
    """A threaded TCP server on 127.0.0.1:0 that runs ``handler(conn)`` per connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.handler(conn)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self.sock.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def sender(payload: bytes) -> Callable[[socket.socket], None]:
    """Send ``payload`` on connect, then close."""
    def handle(conn: socket.socket) -> None:
        conn.sendall(payload)
    return handle


@pytest.fixture
def echo_peer():
    peer = TcpPeer(echo)
    yield peer
    peer.close()


@pytest.fixture
def toxiproxy_server():
    server = ToxiproxyServer("127.0.0.1", 0, seed=1234)
    server.start()
    yield server
    server.stop()


def listen_addr(proxy_json_or_info) -> tuple[str, int]:
    listen = proxy_json_or_info["listen"] if isinstance(proxy_json_or_info, dict) else proxy_json_or_info.listen
    host, port = listen.rsplit(":", 1)
    return host, int(port)


def round_trip_s(addr: tuple[str, int], payload: bytes = b"ping", timeout_s: float = 10.0) -> float:
    started = time.monotonic()
    with socket.create_connection(addr, timeout=timeout_s) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk, "connection closed before the echo came back"
            got += chunk
        assert got == payload
    return time.monotonic() - started


def read_all(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    out = bytearray()
    while len(out) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return bytes(out)
