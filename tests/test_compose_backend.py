"""The compose backend on a real Docker daemon: real containers, real training, real
faults through the Docker SDK, and nothing of a run left afterwards -- also when the
harness is interrupted (SIGINT) or killed (SIGKILL, then the label sweep).

Every test that needs Docker skips itself, with the reason, where no daemon answers.
The runtime image is built (or reused by its content hash) by the first test that
needs it; a fresh CI machine pays one build of a few seconds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.docker_util import docker_available, skip_reason

REPO = Path(__file__).resolve().parent.parent
needs_docker = pytest.mark.skipif(not docker_available(), reason=skip_reason() if not docker_available() else "")
pytestmark = [pytest.mark.docker]


# ---- helpers --------------------------------------------------------------------------
def _events(run_dir: Path) -> list[dict]:
    from trainers.events import read_events
    path = run_dir / "events.jsonl"
    return read_events(path) if path.exists() else []


def _journal(run_dir: Path) -> list[dict]:
    from harness.journal import read_journal
    path = run_dir / "journal.jsonl"
    return read_journal(path) if path.exists() else []


def _wait(what: str, found, timeout_s: float, run_dir: Path | None = None, alive=None):
    """Re-reads the run's files until ``found()`` is truthy; bounded, and cut short
    when ``alive()`` says a node it waits on has died."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = found()
        if value:
            return value
        dead = alive is not None and not alive()
        if dead or time.monotonic() > deadline:
            verdict = "a node it waits on exited first" if dead else f"not within {timeout_s:.0f} s"
            logs = ""
            if run_dir is not None and (run_dir / "logs").is_dir():
                logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                                 for p in sorted((run_dir / "logs").glob("*.log")))
            pytest.fail(f"{what}: {verdict}\n{logs}")
        time.sleep(0.2)  # the trainer appends to events.jsonl about once a second


def _docker_cli_leftovers(run_id: str) -> list[str]:
    """What `docker ps -a` and `docker network ls` show of this run (the user's view)."""
    label = f"label=chaosloco.run={run_id}"
    ps = subprocess.run(["docker", "ps", "-a", "-q", "--filter", label], capture_output=True, text=True, timeout=30)
    nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", label], capture_output=True, text=True,
                          timeout=30)
    assert ps.returncode == 0 and nets.returncode == 0, ps.stderr + nets.stderr
    return ps.stdout.split() + nets.stdout.split()


def _rate(evs: list[dict]) -> float:
    tokens = sum(e["tokens"] for e in evs)
    wall = sum(e["wall_s"] for e in evs)
    return tokens / wall if wall > 0 else 0.0


def _progress(run_dir: Path, learner: int, after: float, before: float = float("inf")) -> list[dict]:
    return [e for e in _events(run_dir) if e.get("ev") == "progress" and e.get("learner") == learner
            and after < e["t"] - e.get("wall_s", 0) and e["t"] < before]


# ---- no daemon, no Compose: one line, exit code 3 ---------------------------------------
def test_no_docker_daemon_is_one_clear_line_and_exit_code_3(tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(REPO / "scenarios" / "quickstart.yaml"),
                           "--backend", "compose", "--quiet", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Docker daemon answers" in lines[0], proc.stderr


def test_no_compose_command_is_an_infra_error(monkeypatch):
    from compose.cli import find_compose
    from harness.errors import InfraError
    monkeypatch.setenv("CHAOSLOCO_COMPOSE", "chaosloco-no-such-compose")
    with pytest.raises(InfraError, match="no Docker Compose found") as e:
        find_compose()
    assert e.value.exit_code == 3


def test_remove_all_labelled_sweeps_every_kind_by_the_chaosloco_label():
    """The ``down --all`` sweep, against a recording fake (the real daemon may hold other
    workers' clusters, which a real --all would take down); the real removal path is the
    same function, run-scoped, in test_a_sigkilled_harness_leaves_containers_the_label_sweep_removes."""
    from compose import cleanup

    calls: list[tuple] = []

    class Obj:
        def __init__(self, kind, name, status="running"):
            self.kind, self.name, self.status, self.containers = kind, name, status, []

        def unpause(self):
            calls.append(("unpause", self.name))

        def remove(self, **kw):
            calls.append(("remove", self.kind, self.name))

        def reload(self):
            pass

    class Listing:
        def __init__(self, items):
            self.items = items

        def list(self, all=False, filters=None):
            calls.append(("list", filters))
            return self.items

    class Client:
        containers = Listing([Obj("container", "c1", "paused"), Obj("container", "c2")])
        networks = Listing([Obj("network", "n1")])
        volumes = Listing([Obj("volume", "v1")])

    assert cleanup.remove_all_labelled(Client()) == []
    assert [c for c in calls if c[0] == "list"] == [("list", {"label": "chaosloco"})] * 3
    assert [c for c in calls if c[0] != "list"] == [
        ("unpause", "c1"), ("remove", "container", "c1"), ("remove", "container", "c2"),
        ("remove", "network", "n1"), ("remove", "volume", "v1")]


# ---- the image ------------------------------------------------------------------------
@needs_docker
def test_runtime_image_is_reused_by_content_hash_and_runs_the_project():
    import docker
    from compose import image

    tag = image.ensure_image()
    client = docker.from_env()
    first_id = client.images.get(tag).id
    image._memo.clear()  # force a second hash of the runtime
    assert image.ensure_image() == tag
    assert client.images.get(tag).id == first_id  # reused, not rebuilt
    out = client.containers.run(
        tag, [image.container_python(), "-c",
              "import sys, torch, trainers.data as d; torch.set_num_threads(1); "
              "print(sys.prefix, torch.ones(2).sum().item(), d.stdlib_dir())"],
        volumes={str(REPO): {"bind": str(REPO), "mode": "ro"},
                 **{str(m): {"bind": str(m), "mode": "ro"} for m in image.mounted_runtime_dirs()}},
        working_dir=str(REPO), environment={"PYTHONPATH": str(REPO)}, remove=True,
        labels={"chaosloco": "1", "chaosloco.run": "imagetest"})
    prefix, total, stdlib = out.decode().split()
    assert prefix == sys.prefix and float(total) == 2.0
    assert stdlib == str(Path(os.__file__).parent)  # the corpus is the host's own stdlib


def test_content_hash_covers_file_bytes_and_modes(tmp_path):
    from compose import image

    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    f = prefix / "bin" / "tool"
    f.write_bytes(b"one")
    entries = image.prefix_entries(prefix)
    h1 = image.content_hash(prefix, entries, [])
    assert image.content_hash(prefix, entries, []) == h1
    f.write_bytes(b"two")
    h2 = image.content_hash(prefix, entries, [])
    f.chmod(0o755)
    h3 = image.content_hash(prefix, entries, [])
    assert len({h1, h2, h3}) == 3 and len(h1) == 16


# ---- a real cluster under faults ---------------------------------------------------------
@pytest.mark.slow
@needs_docker
def test_container_faults_show_in_the_event_log_and_teardown_leaves_nothing(tmp_path):
    import docker
    from compose import cleanup
    from harness.backend import ClusterSpec
    from harness.compose_backend import ComposeBackend
    from harness.journal import Journal
    from trainers.config import TrainerConfig

    run_id = uuid.uuid4().hex[:8]
    run_dir = tmp_path / "run"
    journal = Journal(run_dir / "journal.jsonl")
    trainer = TrainerConfig(learners=2, preset="tiny", fragments=2, sync_every=8, rpc_timeout_s=3.0,
                            heartbeat_s=0.5, eval_every_s=30.0)
    backend = ComposeBackend(journal=journal)
    client = docker.from_env()
    try:
        backend.start(ClusterSpec(run_id=run_id, run_dir=run_dir, trainer=trainer))
        joined = lambda i, inc=0: [e for e in _events(run_dir)  # noqa: E731
                                   if e.get("ev") == "joined" and e["learner"] == i and e["incarnation"] >= inc]
        up = lambda *nodes: lambda: all(backend.is_running(n) for n in ("syncer", *nodes))  # noqa: E731
        _wait("both learners joined", lambda: joined(0) and joined(1), 150, run_dir,
              up("learner-0", "learner-1"))

        # kill: the container dies with SIGKILL's code, a restart is a new incarnation
        backend.kill("learner-0")
        assert not backend.is_running("learner-0")
        _wait("node_exit 137 journaled", lambda: [r for r in _journal(run_dir) if r["kind"] == "node_exit"
                                                  and r["node"] == "learner-0" and r["code"] == 137], 20)
        backend.start_node("learner-0")
        _wait("learner-0 rejoined as incarnation 1", lambda: joined(0, 1), 90, run_dir, up("learner-0"))
        restarts = [r for r in _journal(run_dir) if r["kind"] == "node_start" and r["reason"] == "restart"]
        assert [r["node"] for r in restarts] == ["learner-0"]

        # pause: a frozen learner logs nothing while the other trains on
        backend.pause("learner-1")
        assert client.containers.get(backend.nodes()["learner-1"]["container"]).status == "paused"
        paused_at = time.time()
        _wait("learner-0 progress while learner-1 is paused",
              lambda: len(_progress(run_dir, 0, paused_at)) >= 3, 60, run_dir)
        resumed_at = time.time()
        backend.resume("learner-1")
        assert [e for e in _events(run_dir) if e.get("src") == "learner-1" and paused_at + 0.5 < e["t"] < resumed_at] == []
        _wait("learner-1 progress after resume", lambda: _progress(run_dir, 1, resumed_at), 60, run_dir)

        # throttle: a 5 % CPU quota cuts learner-1's token rate
        before = time.time()
        base = _wait("learner-1 unthrottled windows", lambda: (lambda e: e if len(e) >= 2 else None)(
            _progress(run_dir, 1, before)), 60, run_dir)
        backend.throttle("learner-1", 0.05)
        container = client.containers.get(backend.nodes()["learner-1"]["container"])
        assert container.attrs["HostConfig"]["CpuQuota"] == 5000
        throttled_at = time.time()
        slow = _wait("learner-1 throttled windows", lambda: (lambda e: e if len(e) >= 2 else None)(
            _progress(run_dir, 1, throttled_at)), 90, run_dir)
        backend.throttle("learner-1", None)
        assert client.containers.get(container.id).attrs["HostConfig"]["CpuQuota"] in (0, -1)
        assert _rate(slow) < 0.5 * _rate(base), (slow, base)

        # disconnect: an IP-level partition; after reconnecting, learner-1 pushes again
        backend.disconnect_network("learner-1")
        assert client.containers.get(container.id).attrs["NetworkSettings"]["Networks"] == {}
        cut_at = time.time()
        _wait("learner-0 acked while learner-1 is cut off",
              lambda: len([e for e in _events(run_dir) if e.get("ev") == "ack" and e["learner"] == 0
                           and e["t"] > cut_at]) >= 2, 60, run_dir)
        backend.reconnect_network("learner-1")
        healed_at = time.time()
        assert list(client.containers.get(container.id).attrs["NetworkSettings"]["Networks"]) != []
        _wait("learner-1 acked again after the partition healed",
              lambda: [e for e in _events(run_dir) if e.get("ev") == "ack" and e["learner"] == 1
                       and e["t"] > healed_at], 90, run_dir)
    finally:
        leftovers = backend.teardown()
        journal.close()
    assert leftovers == []
    assert backend.teardown() == []  # idempotent
    assert cleanup.labelled(client, run_id) == []
    assert _docker_cli_leftovers(run_id) == []
    # every node's output file is in the run folder on the host (the learners say little
    # there: their story is events.jsonl, which the containers appended to above)
    assert sorted(p.name for p in (run_dir / "logs").glob("*.log")) == [
        "learner-0.log", "learner-1.log", "syncer.log", "toxiproxy.log"]
    assert "learner-1" in (run_dir / "logs" / "toxiproxy.log").read_text()


# ---- every exit path of a run ---------------------------------------------------------------
SCENARIO = """\
name: compose-exit-path
duration_s: 300
seed: 1
cluster:
  learners: 2
  mode: decoupled
  preset: tiny
  trainer:
    fragments: 2
    sync_every: 8
faults:
  events:
    - {at_s: 100, kind: pause, target: learner-1, duration_s: 5}
checks:
  invariants: true
"""


def _start_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(scenario), "--backend", "compose",
                             "--quiet", "--out", str(run_dir)], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, run_dir


def _run_id(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["run_id"]


@pytest.mark.slow
@needs_docker
def test_sigint_in_the_middle_of_a_compose_run_leaves_nothing(tmp_path):
    proc, run_dir = _start_run(tmp_path)
    try:
        _wait("the run is ready (every learner joined)",
              lambda: proc.poll() is not None or any(r["kind"] == "ready" for r in _journal(run_dir)), 180, run_dir)
        assert proc.poll() is None, proc.stdout.read()
        run_id = _run_id(run_dir)
        assert _docker_cli_leftovers(run_id) != []  # the cluster is up ...
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out
    assert _docker_cli_leftovers(run_id) == []  # ... and after Ctrl-C nothing of it is
    ends = [r for r in _journal(run_dir) if r["kind"] in ("run_end", "teardown")]
    assert [r["kind"] for r in ends] == ["run_end", "teardown"]
    assert ends[0]["status"] == "interrupted" and ends[1]["leftovers"] == []


@pytest.mark.slow
@needs_docker
def test_a_sigkilled_harness_leaves_containers_the_label_sweep_removes(tmp_path):
    from compose import cleanup

    proc, run_dir = _start_run(tmp_path)
    run_id = None
    try:
        _wait("every learner container started",
              lambda: proc.poll() is not None or {r["node"] for r in _journal(run_dir)
                                                  if r["kind"] == "node_start"} >= {"learner-0", "learner-1"},
              180, run_dir)
        assert proc.poll() is None, proc.stdout.read()
        run_id = _run_id(run_dir)
        proc.kill()  # SIGKILL: no finally runs, nothing is torn down
        proc.communicate(timeout=30)
        left = _docker_cli_leftovers(run_id)
        assert len(left) == 4 + 2  # toxiproxy, syncer, 2 learners; networks core and links
        removed, failed = cleanup.remove_labelled(run_id=run_id)
        assert failed == [] and len(removed) == 6
        assert _docker_cli_leftovers(run_id) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if run_id is not None:
            cleanup.remove_labelled(run_id=run_id)
