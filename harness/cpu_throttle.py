"""CPU throttling of local processes: cgroups where the machine allows, else duty cycling.

Order of preference, chosen once per run (``CHAOSLOCO_THROTTLE=v1|v2|duty`` forces one):

1. cgroup v1 cpu controller: ``/sys/fs/cgroup/cpu/chaosloco-<run_id>/<node>/`` with
   ``cpu.cfs_quota_us`` = share x ``cpu.cfs_period_us``;
2. cgroup v2: ``/sys/fs/cgroup/chaosloco-<run_id>/<node>/cpu.max``;
3. the documented fallback where neither is writable (no root, no delegation): a thread
   per throttled node alternates SIGCONT and SIGSTOP on its process group, on for
   share x 100 ms of every 100 ms. This is coarser than the kernel's CFS bandwidth
   control and it fights a concurrent ``pause`` fault (its SIGCONT resumes the node), so
   the run journals which method it used.

A share of 1.0 is one full core (as docker's ``cpus``); shares >= 1 under duty cycling
mean "never stopped". Every cgroup created is removed by ``remove_all`` (idempotent),
after moving any process still inside back to the root group.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

PERIOD_US = 100_000
V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (a node and anything it spawned)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


class _CgroupLimiter:
    method = "cgroup"

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_group = root / f"chaosloco-{run_id}"

    def _node_dir(self, node: str) -> Path:
        d = self.run_group / node
        if not d.exists():
            self._prepare_run_group()
            d.mkdir(exist_ok=True)
        return d

    def _prepare_run_group(self) -> None:
        self.run_group.mkdir(exist_ok=True)

    def set(self, node: str, pgid: int, share: float | None) -> None:
        d = self._node_dir(node)
        self._write_limit(d, share)
        self.attach(node, pgid)

    def attach(self, node: str, pgid: int) -> None:
        d = self._node_dir(node)
        for pid in group_pids(pgid):
            try:
                (d / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass  # exited meanwhile

    def _write_limit(self, d: Path, share: float | None) -> None:
        raise NotImplementedError

    def forget(self, node: str) -> None:
        """Nothing to stop: a cgroup outlives the processes in it."""

    def remove_all(self) -> list[str]:
        left = []
        if not self.run_group.exists():
            return left
        for d in sorted(p for p in self.run_group.iterdir() if p.is_dir()):
            self._evacuate(d)
            try:
                d.rmdir()
            except OSError as e:
                left.append(f"cgroup {d} ({e.strerror})")
        try:
            self.run_group.rmdir()
        except OSError as e:
            if not left:
                left.append(f"cgroup {self.run_group} ({e.strerror})")
        return left

    def _evacuate(self, d: Path) -> None:
        try:
            pids = (d / "cgroup.procs").read_text().split()
        except OSError:
            return
        for pid in pids:
            try:
                (self.root / "cgroup.procs").write_text(pid)
            except OSError:
                pass

    def leftovers(self) -> list[str]:
        return [f"cgroup {self.run_group}"] if self.run_group.exists() else []


class CgroupV1Limiter(_CgroupLimiter):
    method = "cgroup-v1"

    def _write_limit(self, d: Path, share: float | None) -> None:
        (d / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        quota = -1 if share is None else max(1000, int(share * PERIOD_US))
        (d / "cpu.cfs_quota_us").write_text(str(quota))


class CgroupV2Limiter(_CgroupLimiter):
    method = "cgroup-v2"

    def _prepare_run_group(self) -> None:
        (self.root / "cgroup.subtree_control").write_text("+cpu")
        self.run_group.mkdir(exist_ok=True)
        (self.run_group / "cgroup.subtree_control").write_text("+cpu")

    def _write_limit(self, d: Path, share: float | None) -> None:
        quota = "max" if share is None else str(max(1000, int(share * PERIOD_US)))
        (d / "cpu.max").write_text(f"{quota} {PERIOD_US}")


class DutyCycleLimiter:
    """Fallback: SIGSTOP/SIGCONT duty cycling of a process group from a thread."""

    method = "duty-cycle"

    def __init__(self, period_s: float = PERIOD_US / 1e6) -> None:
        self.period_s = period_s
        self._threads: dict[str, tuple[threading.Thread, threading.Event, int]] = {}

    def set(self, node: str, pgid: int, share: float | None) -> None:
        self.forget(node)
        if share is None or share >= 1.0:
            return
        stop = threading.Event()
        t = threading.Thread(target=self._cycle, args=(pgid, share, stop), name=f"throttle-{node}", daemon=True)
        self._threads[node] = (t, stop, pgid)
        t.start()

    def attach(self, node: str, pgid: int) -> None:
        """A restarted node is a new process group: the caller re-sets its share."""

    def _cycle(self, pgid: int, share: float, stop: threading.Event) -> None:
        on_s, off_s = share * self.period_s, (1.0 - share) * self.period_s
        try:
            while not stop.wait(on_s):
                os.killpg(pgid, signal.SIGSTOP)
                if stop.wait(off_s):
                    break
                os.killpg(pgid, signal.SIGCONT)
        except ProcessLookupError:
            return
        finally:
            try:
                os.killpg(pgid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def forget(self, node: str) -> None:
        entry = self._threads.pop(node, None)
        if entry:
            t, stop, _ = entry
            stop.set()
            t.join(timeout=2.0)

    def remove_all(self) -> list[str]:
        for node in list(self._threads):
            self.forget(node)
        return []

    def leftovers(self) -> list[str]:
        return [f"throttle thread {n}" for n, (t, _, _) in self._threads.items() if t.is_alive()]


def _probe(limiter: _CgroupLimiter) -> bool:
    """Can we create (and remove) a group here? Writes nothing lasting."""
    probe = limiter.root / f"{limiter.run_group.name}-probe"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


def for_run(run_id: str, *, prefer: str | None = None):
    """The best limiter this machine allows for a run."""
    prefer = prefer or os.environ.get("CHAOSLOCO_THROTTLE")
    if prefer in (None, "v1") and (V1_ROOT / "cpu.cfs_quota_us").exists():
        v1 = CgroupV1Limiter(V1_ROOT, run_id)
        if _probe(v1):
            return v1
    if prefer in (None, "v2") and "cpu" in _read(V2_ROOT / "cgroup.controllers").split():
        v2 = CgroupV2Limiter(V2_ROOT, run_id)
        if _probe(v2):
            return v2
    return DutyCycleLimiter()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def stale_run_groups() -> list[Path]:
    """Every chaosloco cgroup on this machine (for ``chaosloco down --all``)."""
    found = []
    for root in (V1_ROOT, V2_ROOT):
        if root.is_dir():
            found += [p for p in root.glob("chaosloco-*") if p.is_dir()]
    return found


def remove_group(path: Path) -> list[str]:
    root = path.parent
    limiter = _CgroupLimiter(root, "x")
    limiter.run_group = path
    return limiter.remove_all()
