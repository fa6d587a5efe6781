"""``chaosloco toxiproxy-server`` as a real child process: the ready file, the API, a
proxied connection, clean shutdown on SIGTERM/SIGINT, and exit codes for bad flags."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.toxiproxy_fixtures import echo_peer, listen_addr, read_all  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def _wait_for_text(path: Path, proc: subprocess.Popen, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text:
                return text
        assert proc.poll() is None, "toxiproxy-server died before it was ready"
        time.sleep(0.02)  # polling an event (the file) with a deadline
    raise AssertionError("no ready file within the deadline")


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "faults.toxiproxy.server", *args], cwd=ROOT,
                                stdout=fh, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_server_process_serves_and_shuts_down_cleanly_on_signal(tmp_path, echo_peer, sig):
    ready = tmp_path / "toxiproxy.addr"
    proc = _spawn(["--host", "127.0.0.1", "--port", "0", "--seed", "5", "--ready-file", str(ready)],
                  tmp_path / "server.log")
    try:
        api = _wait_for_text(ready, proc)
        assert api.startswith("127.0.0.1:") and int(api.rsplit(":", 1)[1]) > 0
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
        made = requests.post(f"http://{api}/proxies", json={"name": "learner-0", "listen": "127.0.0.1:0",
                                                            "upstream": echo_peer.address}, timeout=5).json()
        addr = listen_addr(made)
        live = socket.create_connection(addr, timeout=5)
        live.sendall(b"hi")
        assert live.recv(8) == b"hi"
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert read_all(live) == b""  # the live connection was closed, not left hanging
        live.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(addr, timeout=2).close()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{api}/version", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_busy_port_is_one_line_and_exit_3(tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        proc = _spawn(["--port", str(taken.getsockname()[1])], tmp_path / "server.log")
        assert proc.wait(timeout=30) == 3
    finally:
        taken.close()
    lines = (tmp_path / "server.log").read_text().strip().splitlines()
    assert len(lines) == 1 and "cannot listen on 127.0.0.1:" in lines[0]


def test_bad_flags_exit_2_through_chaosloco(tmp_path):
    chaosloco = Path(sys.executable).parent / "chaosloco"
    cmd = [str(chaosloco)] if chaosloco.exists() else [sys.executable, "-m", "harness.cli"]
    done = subprocess.run([*cmd, "toxiproxy-server", "--port", "70000"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ})
    assert done.returncode == 2 and "--port must be 0..65535" in done.stderr


@pytest.mark.parametrize("bad", [["--port", "x"], ["--seed", "nope"], ["--what"]])
def test_bad_flags_exit_2_in_process(bad):
    from faults.toxiproxy.server import main
    with pytest.raises(SystemExit) as exited:
        main(bad)
    assert exited.value.code == 2
