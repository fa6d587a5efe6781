"""Starting trainer processes: free ports, process groups, bounded waits, teardown.

Used by ``chaosloco train`` and the process-level tests, and general enough for the
harness's local backend:

- ``free_port()`` picks a port free right now. The synchronizer must keep its port
  across a restart (learners reconnect to the same address), so it cannot bind 0; the
  tiny window between this probe and its bind is the price.
- ``start(argv, log_path)`` runs a child in its own session (``start_new_session``: a
  signal to its process group reaches everything it spawned), output appended to
  ``DIR/logs/<node>.log``, and ``PR_SET_PDEATHSIG`` (via ctypes ``prctl``, Linux) so it
  dies with the thread that started it: nothing outlives a crashed test or command.
- ``wait_for_event(events_path, predicate, deadline_s)`` tails ``events.jsonl`` until an
  event satisfies ``predicate``: waits are for events, never fixed sleeps.
- ``stop(proc)`` sends SIGTERM to the group, waits a bounded time, then SIGKILL.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from harness.errors import InfraError

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.05


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux/glibc: the caller's finally-teardown still applies


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def start(argv: Sequence[str], log_path: str | os.PathLike[str], *,
          env: Mapping[str, str] | None = None, cwd: str | None = None,
          die_with_parent: bool = True) -> subprocess.Popen:
    """Starts ``argv`` in a new session with stdout+stderr appended to ``log_path``."""
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log, "ab") as fh:
        try:
            return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT, env=child_env, cwd=cwd,
                                    start_new_session=True,
                                    preexec_fn=_die_with_parent if die_with_parent else None)
        except OSError as e:
            raise InfraError(f"cannot start {' '.join(argv[:3])}: {e}") from e


def wait_for_event(events_path: str | os.PathLike[str], predicate: Callable[[dict[str, Any]], bool],
                   deadline_s: float, *, alive: Callable[[], bool] | None = None,
                   what: str = "event") -> dict[str, Any]:
    """Tails ``events_path`` (from its start) until ``predicate(event)`` holds; returns
    that event. Raises InfraError after ``deadline_s`` seconds or when ``alive()`` says
    the process we wait on is gone."""
    path = Path(events_path)
    end = time.monotonic() + deadline_s
    offset, pending = 0, b""
    while True:
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                try:
                    event = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if predicate(event):
                    return event
        elif alive is not None and not alive():
            raise InfraError(f"waiting for {what} in {path}: the process died first")
        if time.monotonic() > end:
            raise InfraError(f"waiting for {what} in {path}: not within {deadline_s:.0f} s")
        if not chunk:
            time.sleep(_POLL_S)


def wait_for_port(host: str, port: int, deadline_s: float, *,
                  alive: Callable[[], bool] | None = None) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if alive is not None and not alive():
            raise InfraError(f"waiting for {host}:{port}: the process died first")
        if time.monotonic() > end:
            raise InfraError(f"waiting for {host}:{port}: not within {deadline_s:.0f} s")
        time.sleep(_POLL_S)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen | None, *, grace_s: float = 10.0) -> int | None:
    """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL; returns the
    exit code (None if it could not be reaped)."""
    if proc is None:
        return None
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            # Hung: ask for a stack dump into its log (our trainer processes register
            # faulthandler on SIGQUIT) so the hang can be diagnosed, then kill.
            signal_group(proc, signal.SIGQUIT)
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
    signal_group(proc, signal.SIGKILL)  # stragglers in the group, even if the leader exited
    try:
        return proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        return None


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the whole group now (a crash) and reap the leader."""
    signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass
