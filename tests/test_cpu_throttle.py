"""CPU throttling on real busy processes: the cgroup limiter caps CPU time near the
share and leaves no cgroup behind; the duty-cycle fallback caps it too and leaves the
process running when lifted."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness import cpu_throttle

BUSY = [sys.executable, "-c", "while True: pass"]
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _cpu_over(pid: int, seconds: float) -> float:
    start = _cpu_s(pid)
    time.sleep(seconds)  # measuring a rate over a fixed window, not waiting for readiness
    return _cpu_s(pid) - start


@pytest.fixture
def busy():
    proc = subprocess.Popen(BUSY, start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _v1_writable() -> bool:
    return isinstance(cpu_throttle.for_run("probe" + uuid.uuid4().hex[:6], prefer="v1"), cpu_throttle.CgroupV1Limiter)


@pytest.mark.skipif(not _v1_writable(), reason="cgroup v1 cpu controller not writable here")
def test_cgroup_v1_caps_cpu_and_removes_its_groups(busy):
    run_id = uuid.uuid4().hex[:8]
    limiter = cpu_throttle.for_run(run_id, prefer="v1")
    group = cpu_throttle.V1_ROOT / f"chaosloco-{run_id}" / "learner-0"
    try:
        limiter.set("learner-0", busy.pid, 0.2)
        assert (group / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert str(busy.pid) in (group / "cgroup.procs").read_text().split()
        used = _cpu_over(busy.pid, 1.5)
        assert used < 0.2 * 1.5 + 0.12, used  # CFS quota: at most 20 ms per 100 ms period
        limiter.set("learner-0", busy.pid, None)  # lifted: unlimited quota
        assert (group / "cpu.cfs_quota_us").read_text().strip() == "-1"
    finally:
        assert limiter.remove_all() == []
    assert not group.parent.exists() and limiter.leftovers() == []
    assert busy.poll() is None  # removing the group did not hurt the process


def test_duty_cycle_fallback_caps_cpu_and_resumes_when_lifted(busy):
    limiter = cpu_throttle.DutyCycleLimiter()
    limiter.set("learner-0", busy.pid, 0.25)
    try:
        used = _cpu_over(busy.pid, 1.5)
        assert used < 0.25 * 1.5 + 0.2, used
    finally:
        limiter.remove_all()
    state = Path(f"/proc/{busy.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert state in ("R", "S") and limiter.leftovers() == []


def test_forced_fallback_is_the_duty_cycle():
    assert isinstance(cpu_throttle.for_run("x", prefer="duty"), cpu_throttle.DutyCycleLimiter)
