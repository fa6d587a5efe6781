"""The local backend: a whole cluster as child processes on 127.0.0.1.

Layout of a run (every port chosen free at start, none fixed):

    toxiproxy   python -m faults.toxiproxy.server --port 0 --seed SEED --ready-file DIR/toxiproxy.addr
    syncer      python -m trainers.syncer --port P --control-port CP  (P, CP fixed for the
                whole run, so a restarted synchronizer comes back where learners look)
    learner-i   python -m trainers.learner --syncer 127.0.0.1:<proxy learner-i's port>

Each learner's link runs through its own proxy ``learner-i`` (listen 127.0.0.1:0, the
server reports the real port; upstream the synchronizer's port). The control port is
never proxied. Every node runs in its own session, so a fault acts on its whole process
group; it dies with the harness (PR_SET_PDEATHSIG) unless the backend is ``detach``ed
for ``chaosloco up``, whose processes must outlive the command. Output goes to
``DIR/logs/<node>.log``. Lifecycle lands in the journal (``node_start``, ``node_exit``).

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so nodes are
(re)started only from the thread that owns the backend (the run's main loop).
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness import cpu_throttle
from harness.backend import ClusterSpec, Unsupported
from harness.errors import InfraError
from harness.journal import Journal
from trainers import config as trainer_config
from harness import local_proc as launch

SYNCER, TOXIPROXY = "syncer", "toxiproxy"
RUN_ID_ENV = "CHAOSLOCO_RUN_ID"  # every node carries it: ``down --all`` and leak checks find them by it


@dataclasses.dataclass
class _Node:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    pid: int | None = None  # set also for nodes re-attached from cluster.json (no Popen)


class LocalBackend:
    name = "local"

    def __init__(self, *, journal: Journal | None = None, detach: bool = False,
                 start_timeout_s: float = 60.0, python: str = sys.executable,
                 throttle_method: str | None = None) -> None:
        self.journal = journal
        self.detach = detach
        self.start_timeout_s = start_timeout_s
        self.python = python
        self._throttle_method = throttle_method
        self._nodes: dict[str, _Node] = {}
        self._shares: dict[str, float] = {}  # current CPU limit per node (absent = none)
        self._baseline: dict[str, float] = {}
        self._limiter = None
        self._spec: ClusterSpec | None = None
        self._toxiproxy_addr = ""
        self._syncer_port = self._control_port = 0
        self._lock = threading.Lock()
        self._torn_down = False

    # ---- start -------------------------------------------------------------------
    def start(self, spec: ClusterSpec) -> None:
        from faults.link_adapter import ToxiproxyAdapter  # heavy-ish; only when starting

        self._spec = spec
        run_dir = Path(spec.run_dir)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._ensure_run_files(spec)
        self._limiter = cpu_throttle.for_run(spec.run_id, prefer=self._throttle_method)
        self._record("throttle_method", method=self._limiter.method)

        ready_file = run_dir / "toxiproxy.addr"
        ready_file.unlink(missing_ok=True)
        self._add(TOXIPROXY, ["-m", "faults.toxiproxy.server", "--host", "127.0.0.1", "--port", "0",
                              "--seed", str(spec.seed), "--ready-file", str(ready_file)])
        self._spawn(TOXIPROXY, "initial")
        self._toxiproxy_addr = launch.wait_for_file_text(ready_file, timeout_s=self.start_timeout_s,
                                                         alive=lambda: self.is_running(TOXIPROXY))

        self._syncer_port = launch.free_port()
        self._control_port = launch.free_port()
        while self._control_port == self._syncer_port:  # two probes may draw the same port
            self._control_port = launch.free_port()
        self._add(SYNCER, ["-m", "trainers.syncer", "--run-dir", str(run_dir), "--host", "127.0.0.1",
                           "--port", str(self._syncer_port), "--control-port", str(self._control_port),
                           "--config", str(run_dir / "config.json"), "--secret-file", str(run_dir / "secret")])
        self._spawn(SYNCER, "initial")

        links = ToxiproxyAdapter(self.toxiproxy_url())
        for i, node in enumerate(spec.learner_names):
            info = links.create_proxy(node, "127.0.0.1:0", f"127.0.0.1:{self._syncer_port}")
            self._add(node, ["-m", "trainers.learner", "--run-dir", str(run_dir), "--id", str(i),
                             "--syncer", info.listen, "--secret-file", str(run_dir / "secret")])
        launch.wait_for_port("127.0.0.1", self._syncer_port, timeout_s=self.start_timeout_s,
                             alive=lambda: self.is_running(SYNCER))
        for i, node in enumerate(spec.learner_names):
            if i < len(spec.cpu_shares) and spec.cpu_shares[i] is not None:
                self._baseline[node] = float(spec.cpu_shares[i])
                self._shares[node] = float(spec.cpu_shares[i])
            self._spawn(node, "initial")

    def _ensure_run_files(self, spec: ClusterSpec) -> None:
        run_dir = Path(spec.run_dir)
        if not (run_dir / "config.json").exists():
            trainer_config.save(spec.trainer, run_dir / "config.json")
        secret = run_dir / "secret"
        if not secret.exists():
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex())

    def _add(self, name: str, args: list[str]) -> None:
        self._nodes[name] = _Node(name, [self.python, *args])

    def _spawn(self, name: str, reason: str) -> None:
        assert self._spec is not None
        node = self._nodes[name]
        env = {**os.environ, RUN_ID_ENV: self._spec.run_id, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        proc = launch.spawn(node.argv, log_path=Path(self._spec.run_dir) / "logs" / f"{name}.log", env=env,
                            die_with_parent=not self.detach, cwd=str(Path(__file__).resolve().parent.parent))
        node.proc, node.pid = proc, proc.pid
        self._record("node_start", node=name, pid=proc.pid, reason=reason)
        if name in self._shares:
            self._apply_share(name)
        if not self.detach:
            threading.Thread(target=self._watch, args=(name, proc), name=f"watch-{name}", daemon=True).start()

    def _watch(self, name: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        self._record("node_exit", node=name, pid=proc.pid, code=code)

    def _record(self, kind: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.record(kind, **fields)

    # ---- addresses -----------------------------------------------------------------
    def toxiproxy_url(self) -> str:
        return f"http://{self._toxiproxy_addr}"

    def control_url(self) -> str:
        return f"http://127.0.0.1:{self._control_port}"

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every node with its pid and command line (cluster.json for ``chaosloco up``)."""
        return {n.name: {"pid": n.pid, "argv": n.argv} for n in self._nodes.values()}

    # ---- node actions --------------------------------------------------------------
    def _node(self, name: str) -> _Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise InfraError(f"no node {name!r} in this cluster (nodes: {', '.join(self._nodes)})") from None

    def is_running(self, node: str) -> bool:
        n = self._node(node)
        if n.proc is not None:
            return n.proc.poll() is None
        return n.pid is not None and launch.pid_alive(n.pid)

    def _signal_group(self, n: _Node, signum: int) -> bool:
        if n.pid is None or not self.is_running(n.name):
            return False
        try:
            os.killpg(n.pid, signum)
            return True
        except ProcessLookupError:
            return False

    def _wait_exit(self, n: _Node, timeout_s: float) -> bool:
        if n.proc is not None:
            try:
                n.proc.wait(timeout=timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while n.pid is not None and launch.pid_alive(n.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)  # polling a pid we did not fork: no child wait is possible
        return True

    def kill(self, node: str) -> None:
        n = self._node(node)
        if self._signal_group(n, signal.SIGKILL) and not self._wait_exit(n, 10.0):
            raise InfraError(f"{node} (pid {n.pid}) survived SIGKILL for 10 s")

    def stop(self, node: str, timeout_s: float = 10.0) -> None:
        n = self._node(node)
        if not self._signal_group(n, signal.SIGTERM):
            return
        self._signal_group(n, signal.SIGCONT)  # a paused node cannot handle SIGTERM
        if not self._wait_exit(n, timeout_s):
            self.kill(node)

    def start_node(self, node: str) -> None:
        if self.is_running(node):
            return
        self._spawn(node, "restart")

    def pause(self, node: str) -> None:
        self._signal_group(self._node(node), signal.SIGSTOP)

    def resume(self, node: str) -> None:
        self._signal_group(self._node(node), signal.SIGCONT)

    def signal(self, node: str, signum: int) -> None:
        n = self._node(node)
        if n.pid is None or not self.is_running(node):
            raise InfraError(f"cannot signal {node}: not running")
        os.kill(n.pid, signum)  # the node's main process only: the hooks live there

    def throttle(self, node: str, cpu_share: float | None) -> None:
        self._node(node)
        if cpu_share is None:
            self._shares.pop(node, None)
        else:
            self._shares[node] = float(cpu_share)
        self._apply_share(node)

    def baseline_cpu_share(self, node: str) -> float | None:
        return self._baseline.get(node)

    def _apply_share(self, node: str) -> None:
        n = self._nodes[node]
        if self._limiter is None or n.pid is None or not self.is_running(node):
            return
        self._limiter.set(node, n.pid, self._shares.get(node))

    @property
    def throttle_method(self) -> str:
        return self._limiter.method if self._limiter else "none"

    def disconnect_network(self, node: str) -> None:
        raise Unsupported("the local backend has no cluster network to disconnect from; "
                          "use link_down (a Toxiproxy partition) or the compose backend")

    def reconnect_network(self, node: str) -> None:
        raise Unsupported("the local backend has no cluster network")

    # ---- teardown ------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """SIGCONT + SIGKILL every node's process group, reap, remove cgroups."""
        with self._lock:
            for n in self._nodes.values():
                if n.pid is None:
                    continue
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.killpg(n.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            for n in self._nodes.values():
                self._wait_exit(n, 10.0)
            self._kill_marked_stragglers(5.0)
            if self._limiter is not None:
                self._limiter.remove_all()
            self._torn_down = True
        return self.leftovers()

    def _kill_marked_stragglers(self, timeout_s: float) -> None:
        """SIGKILL is delivered asynchronously and a grandchild is not ours to reap, so
        wait (bounded) until nothing carrying this run's marker is alive; anything that
        left its group (setsid) is killed here too."""
        if self._spec is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            marked = launch.processes_with_env(RUN_ID_ENV, self._spec.run_id)
            if not marked or time.monotonic() > deadline:
                return
            for pid, _ in marked:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)

    def leftovers(self) -> list[str]:
        left = [f"process {n.name} pid {n.pid}" for n in self._nodes.values()
                if n.pid is not None and self.is_running(n.name)]
        if self._spec is not None:  # anything else carrying this run's marker (escaped its group)
            known = {n.pid for n in self._nodes.values()}
            left += [f"process pid {pid}: {cmd[:80]}" for pid, cmd in
                     launch.processes_with_env(RUN_ID_ENV, self._spec.run_id) if pid not in known]
        if self._limiter is not None:
            left += self._limiter.leftovers()
        return left

    # ---- chaosloco up / inject / down ------------------------------------------------
    def describe(self) -> dict[str, Any]:
        assert self._spec is not None
        return {"backend": self.name, "run_id": self._spec.run_id, "run_dir": str(self._spec.run_dir),
                "toxiproxy_url": self.toxiproxy_url(), "control_url": self.control_url(),
                "syncer_port": self._syncer_port, "nodes": self.nodes(), "baseline_cpu_shares": self._baseline,
                "throttle_method": self.throttle_method}

    @classmethod
    def attach(cls, cluster: dict[str, Any], spec: ClusterSpec, *, journal: Journal | None = None) -> "LocalBackend":
        """Re-creates a backend for a cluster left running by ``chaosloco up``."""
        b = cls(journal=journal, detach=True, throttle_method=None)
        b._spec = spec
        b._toxiproxy_addr = cluster["toxiproxy_url"].split("://", 1)[-1]
        b._syncer_port = int(cluster["syncer_port"])
        b._control_port = int(cluster["control_url"].rsplit(":", 1)[-1])
        b._baseline = {k: float(v) for k, v in cluster.get("baseline_cpu_shares", {}).items()}
        b._shares = dict(b._baseline)
        b._limiter = cpu_throttle.for_run(spec.run_id)
        for name, info in cluster["nodes"].items():
            b._nodes[name] = _Node(name, list(info["argv"]), pid=info.get("pid"))
        return b
