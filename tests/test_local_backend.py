"""The local backend's node actions on real process groups (stand-in programs), and,
with the real trainer and proxy server, a whole cluster brought up and torn down."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.backend import ClusterSpec, Unsupported
from harness.journal import Journal, read_journal
from harness.local import RUN_ID_ENV, LocalBackend
from harness.local_proc import pid_alive, processes_with_env
from trainers.config import TrainerConfig

# Writes "term" to a file on SIGTERM then exits 0; spawns a grandchild in its group; sleeps.
NODE = r"""
import signal, subprocess, sys, time
out = sys.argv[1]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(out + ".child", "w").write(str(child.pid))
def term(*_):
    open(out, "w").write("term"); sys.exit(0)
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGUSR1, lambda *_: open(out, "w").write("usr1"))
open(out + ".ready", "w").write("1")
while True:
    time.sleep(0.05)
"""


def _wait(pred, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def backend(tmp_path):
    run_id = uuid.uuid4().hex[:8]
    b = LocalBackend(journal=Journal(tmp_path / "journal.jsonl"))
    b._spec = ClusterSpec(run_id=run_id, run_dir=tmp_path, trainer=TrainerConfig())
    from harness import cpu_throttle
    b._limiter = cpu_throttle.for_run(run_id)
    yield b
    assert b.teardown() == []


def _node(b: LocalBackend, tmp_path: Path, name: str) -> Path:
    marker = tmp_path / name
    b._add(name, ["-c", NODE, str(marker)])
    b._spawn(name, "initial")
    _wait(lambda: (tmp_path / f"{name}.ready").exists())
    return marker


def test_kill_takes_the_whole_process_group_and_start_node_respawns(backend, tmp_path):
    _node(backend, tmp_path, "learner-0")
    first = backend.nodes()["learner-0"]["pid"]
    grandchild = int((tmp_path / "learner-0.child").read_text())
    backend.kill("learner-0")
    assert not backend.is_running("learner-0")
    _wait(lambda: not pid_alive(grandchild))
    (tmp_path / "learner-0.ready").unlink()
    backend.start_node("learner-0")
    _wait(lambda: (tmp_path / "learner-0.ready").exists())
    assert backend.is_running("learner-0") and backend.nodes()["learner-0"]["pid"] != first
    _wait(lambda: any(r["kind"] == "node_exit" for r in read_journal(tmp_path / "journal.jsonl")))
    journal = read_journal(tmp_path / "journal.jsonl")
    starts = [(r["node"], r["reason"]) for r in journal if r["kind"] == "node_start"]
    assert starts == [("learner-0", "initial"), ("learner-0", "restart")]
    exits = [r for r in journal if r["kind"] == "node_exit"]
    assert exits[0]["node"] == "learner-0" and exits[0]["code"] == -signal.SIGKILL


def test_stop_is_sigterm_first_even_when_paused(backend, tmp_path):
    marker = _node(backend, tmp_path, "learner-1")
    backend.pause("learner-1")
    pid = backend.nodes()["learner-1"]["pid"]
    _wait(lambda: _state(pid) == "T")
    backend.stop("learner-1", timeout_s=10)
    assert marker.read_text() == "term" and not backend.is_running("learner-1")


def test_pause_and_resume_stop_and_continue_the_group(backend, tmp_path):
    _node(backend, tmp_path, "learner-0")
    pid = backend.nodes()["learner-0"]["pid"]
    grandchild = int((tmp_path / "learner-0.child").read_text())
    backend.pause("learner-0")
    _wait(lambda: _state(pid) == "T" and _state(grandchild) == "T")
    backend.resume("learner-0")
    _wait(lambda: _state(pid) != "T" and _state(grandchild) != "T")


def test_signal_reaches_the_node(backend, tmp_path):
    marker = _node(backend, tmp_path, "learner-0")
    backend.signal("learner-0", signal.SIGUSR1)
    _wait(lambda: marker.exists() and marker.read_text() == "usr1")


def test_throttle_is_remembered_across_a_restart(backend, tmp_path):
    _node(backend, tmp_path, "learner-0")
    backend.throttle("learner-0", 0.5)
    if backend.throttle_method == "cgroup-v1":
        group = Path(f"/sys/fs/cgroup/cpu/chaosloco-{backend._spec.run_id}/learner-0")
        assert (group / "cpu.cfs_quota_us").read_text().strip() == "50000"
        backend.kill("learner-0")
        backend.start_node("learner-0")
        pid = backend.nodes()["learner-0"]["pid"]
        assert str(pid) in (group / "cgroup.procs").read_text().split()
    backend.throttle("learner-0", None)
    assert backend.teardown() == []
    assert not Path(f"/sys/fs/cgroup/cpu/chaosloco-{backend._spec.run_id}").exists()


def test_teardown_is_idempotent_and_leaves_no_process_of_the_run(backend, tmp_path):
    _node(backend, tmp_path, "learner-0")
    _node(backend, tmp_path, "learner-1")
    backend.pause("learner-1")
    children = [int((tmp_path / f"learner-{i}.child").read_text()) for i in range(2)]
    assert backend.teardown() == [] and backend.teardown() == []
    assert backend.leftovers() == []
    _wait(lambda: not any(pid_alive(c) for c in children))
    assert processes_with_env(RUN_ID_ENV, backend._spec.run_id) == []


def test_disconnect_is_unsupported_locally(backend):
    with pytest.raises(Unsupported):
        backend.disconnect_network("learner-0")


# ---- the real cluster: our Toxiproxy server, the synchronizer, learners -------------

def _events(run_dir: Path, ev: str) -> list[dict]:
    from trainers.events import read_events
    return [e for e in read_events(run_dir / "events.jsonl") if e.get("ev") == ev]


def _joined(b: LocalBackend, run_dir: Path, count: int) -> bool:
    """At least ``count`` joins; fails at once (with the log) when a learner died."""
    for node in ("learner-0", "learner-1"):
        if not b.is_running(node):
            log = (run_dir / "logs" / f"{node}.log").read_text()[-1500:]
            raise AssertionError(f"{node} exited:\n{log}")
    return len(_events(run_dir, "joined")) >= count


@pytest.mark.slow
def test_real_cluster_proxies_each_learner_survives_restarts_and_leaves_nothing(tmp_path):
    from faults.link_adapter import ToxiproxyAdapter
    from harness import local_proc

    run_id = uuid.uuid4().hex[:8]
    trainer = TrainerConfig(learners=2, preset="tiny", fragments=4, sync_every=12)
    spec = ClusterSpec(run_id=run_id, run_dir=tmp_path, trainer=trainer, cpu_shares=(1.0, 0.5), seed=5)
    b = LocalBackend(journal=Journal(tmp_path / "journal.jsonl"))
    try:
        b.start(spec)
        proxies = {p.name: p for p in ToxiproxyAdapter(b.toxiproxy_url()).proxies()}
        assert set(proxies) == {"learner-0", "learner-1"}
        syncer_port = b.describe()["syncer_port"]
        for i in range(2):
            assert proxies[f"learner-{i}"].upstream == f"127.0.0.1:{syncer_port}"
            argv = b.nodes()[f"learner-{i}"]["argv"]
            assert argv[argv.index("--syncer") + 1] == proxies[f"learner-{i}"].listen  # through its proxy
        assert str(b.describe()["control_url"]).endswith(str(b._control_port))
        proxy_argv = b.nodes()["toxiproxy"]["argv"]
        assert proxy_argv[proxy_argv.index("--seed") + 1] == "5"  # toxicity and jitter replay with the run
        _wait(lambda: _joined(b, tmp_path, 2), timeout_s=120)

        b.kill("learner-1")
        b.start_node("learner-1")
        _wait(lambda: _joined(b, tmp_path, 3), timeout_s=120)
        assert _events(tmp_path, "joined")[-1]["learner"] == 1

        b.kill("syncer")
        b.start_node("syncer")  # same port: the proxies' upstream still points at it
        local_proc.wait_for_port("127.0.0.1", syncer_port, timeout_s=60)
        _wait(lambda: len(_events(tmp_path, "syncer_start")) >= 2, timeout_s=60)
        if b.throttle_method == "cgroup-v1":
            quota = Path(f"/sys/fs/cgroup/cpu/chaosloco-{run_id}/learner-1/cpu.cfs_quota_us")
            assert quota.read_text().strip() == "50000"  # the baseline share, kept across the restart
    finally:
        assert b.teardown() == []
    assert processes_with_env(RUN_ID_ENV, run_id) == []
    assert not Path(f"/sys/fs/cgroup/cpu/chaosloco-{run_id}").exists()
    journal = read_journal(tmp_path / "journal.jsonl")
    assert [r["node"] for r in journal if r["kind"] == "node_start" and r["reason"] == "restart"] == \
        ["learner-1", "syncer"]


def test_leftovers_names_any_process_carrying_the_runs_marker(backend, tmp_path):
    env = {**os.environ, RUN_ID_ENV: backend._spec.run_id}
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env)
    try:
        _wait(lambda: any(f"pid {stray.pid}" in x for x in backend.leftovers()))
    finally:
        stray.kill()
        stray.wait()
    assert backend.leftovers() == []
