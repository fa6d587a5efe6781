"""Process plumbing the local backend needs beyond ``trainers.launch``.

Spawning, free ports and port waits are the trainer launcher's (``trainers.launch``:
new session, PR_SET_PDEATHSIG, log file), re-exported here so the backend has one
import. Added here: waiting for a ready file (our Toxiproxy server writes its address to
one), liveness of a pid we may not have forked (``chaosloco down`` acts on a cluster
another command started), and finding processes by the run-id marker in their
environment (leak checks and ``down --all``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Mapping

from harness.errors import InfraError
from trainers import launch

free_port = launch.free_port
_POLL_S = 0.05  # how often a bounded wait re-checks its event


def spawn(argv: list[str], *, log_path: Path, env: Mapping[str, str], die_with_parent: bool = True,
          cwd: str | None = None):
    return launch.start(argv, log_path, env=env, cwd=cwd, die_with_parent=die_with_parent)


def wait_for_port(host: str, port: int, *, timeout_s: float, alive: Callable[[], bool] | None = None) -> None:
    launch.wait_for_port(host, port, timeout_s, alive=alive)


def wait_for_file_text(path: Path, *, timeout_s: float, alive: Callable[[], bool] | None = None) -> str:
    """The stripped first line of a ready file once it is complete (ends with a newline,
    or, for a writer that omits it, reads the same twice in a row)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        try:
            text = path.read_text()
        except OSError:
            text = ""
        if text.strip() and (text.endswith("\n") or text == last):
            return text.strip().splitlines()[0]
        last = text
        if alive is not None and not alive():
            raise InfraError(f"waiting for {path}: the process died first (see its log)")
        if time.monotonic() > deadline:
            raise InfraError(f"waiting for {path}: not within {timeout_s:.0f} s")
        time.sleep(_POLL_S)


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie counts as gone: it holds nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def processes_with_env(name: str, value: str | None = None) -> list[tuple[int, str]]:
    """Live processes whose environment has ``name`` (= ``value`` when given)."""
    found = []
    prefix = f"{name}=".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        hit = [e for e in env if e.startswith(prefix)]
        if hit and (value is None or hit[0] == prefix + value.encode()) and pid_alive(int(proc.name)):
            found.append((int(proc.name), cmd))
    return found
