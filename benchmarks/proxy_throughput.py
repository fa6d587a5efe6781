"""Throughput through our Toxiproxy server (no toxic) against a direct connection.

    .venv/bin/python benchmarks/proxy_throughput.py [--mb 200] [--repeats 3]

The server runs as its own process (``python -m faults.toxiproxy.server``), as it does
under the local backend, so it does not share a GIL with the sender or the sink. The
sink is a child process too; the sender is this process. Each figure is the best of
``--repeats`` transfers of ``--mb`` MB (1 MB = 10^6 bytes), timed from the first byte
sent to the sink's report that it has them all (monotonic clock).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SINK = r"""
import socket, sys
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
buf = bytearray(1 << 20)
while True:
    conn, _ = srv.accept()
    with conn:
        want = int.from_bytes(conn.recv(8, socket.MSG_WAITALL), "big")
        got = 0
        while got < want:
            n = conn.recv_into(buf)
            if not n:
                break
            got += n
        conn.sendall(got.to_bytes(8, "big"))
"""


def _transfer(addr: tuple[str, int], size: int) -> float:
    block = os.urandom(1 << 20)
    with socket.create_connection(addr, timeout=60) as s:
        started = time.monotonic()
        s.sendall(size.to_bytes(8, "big"))
        sent = 0
        while sent < size:
            n = min(len(block), size - sent)
            s.sendall(block[:n] if n < len(block) else block)
            sent += n
        got = int.from_bytes(s.recv(8, socket.MSG_WAITALL), "big")
        elapsed = time.monotonic() - started
    if got != size:
        raise RuntimeError(f"sink got {got} of {size} bytes")
    return size / elapsed / 1e6


def _wait_file(path: Path, proc: subprocess.Popen, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError("toxiproxy-server exited before it was ready")
        time.sleep(0.02)
    raise RuntimeError("toxiproxy-server not ready in time")


def measure(mb: int, repeats: int) -> tuple[float, float]:
    """(direct MB/s, through-proxy MB/s), best of ``repeats`` each."""
    size = mb * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "addr"
        server = subprocess.Popen([sys.executable, "-m", "faults.toxiproxy.server", "--port", "0",
                                   "--ready-file", str(ready)], cwd=ROOT, stderr=subprocess.DEVNULL)
        sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
        try:
            sink_port = int(sink.stdout.readline())
            api = _wait_file(ready, server)
            req = urllib.request.Request(f"http://{api}/proxies", method="POST", data=json.dumps(
                {"name": "bench", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{sink_port}"}).encode())
            with urllib.request.urlopen(req, timeout=10) as r:
                host, port = json.load(r)["listen"].rsplit(":", 1)
            direct = max(_transfer(("127.0.0.1", sink_port), size) for _ in range(repeats))
            proxied = max(_transfer((host, int(port)), size) for _ in range(repeats))
        finally:
            for proc in (server, sink):
                proc.terminate()
                proc.wait(10)
            sink.stdout.close()
    return direct, proxied


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    direct, proxied = measure(args.mb, args.repeats)
    print(f"direct:        {direct:8.1f} MB/s")
    print(f"through proxy: {proxied:8.1f} MB/s  ({proxied / direct:.0%} of direct; {args.mb} MB, "
          f"best of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
