"""Suite-wide guard for SPEC §3 item 7 in the tests themselves: nothing left running.

Every process a test starts inherits CHAOSLOCO_TEST_MARKER from this pytest process
(each xdist worker has its own). At the end of each worker's session we look for live processes
that still carry the marker in their environment; any found are killed and reported,
and the session fails with a teardown error, so a leaking test cannot pass quietly.
"""
from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

MARKER = "CHAOSLOCO_TEST_MARKER"


def _marked_processes(marker: str) -> list[tuple[int, str]]:
    needle = f"{MARKER}={marker}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                continue  # a zombie holds no resources; its parent reaps it
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(proc.name), cmd.strip()))
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running():
    """Fails the session (as a teardown error, which xdist reports too) on leaks."""
    marker = uuid.uuid4().hex
    os.environ[MARKER] = marker
    yield
    if not Path("/proc").is_dir():
        return
    leftovers = _marked_processes(marker)
    for pid, _ in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if leftovers:
        lines = "\n".join(f"  pid {pid}: {cmd[:160]}" for pid, cmd in leftovers)
        pytest.fail(f"processes left running by the tests (killed now):\n{lines}", pytrace=False)
