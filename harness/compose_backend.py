"""The compose backend: the cluster as Docker Compose containers behind Toxiproxy links.

    toxiproxy   our Toxiproxy-API server (or Shopify's image), networks core + links,
                API on 8474 published to an ephemeral 127.0.0.1 port
    syncer      python -m trainers.syncer, network core, control port 7001 published
    learner-i   python -m trainers.learner --syncer toxiproxy:<20000+i>, network links
                (internal): its own proxy is its only way to the synchronizer

One image serves every node (compose.image: built offline, cached by content hash);
the compose file is generated per run (compose.compose_file) and kept in the run
folder. ``start`` brings the cluster up in two steps: proxy server and synchronizer
first, then -- once both answer HTTP and the ``learner-i`` proxies exist (created
through the Toxiproxy API, as on the local backend) -- the learners, so no learner
dials a proxy that is not there yet.

Faults act through the Docker SDK on the node's container: kill, stop / start (a
stopped container started again is a new incarnation of the node, same container),
pause / unpause (cgroup freezer), ``update(cpu_quota, cpu_period)`` for slower
hardware, disconnect / reconnect from the node's networks (an IP-level partition, the
one fault only this backend has), and ``kill(signal=...)`` for the learner's corruption
hooks. Link faults go through the Toxiproxy API, unchanged.

Lifecycle goes to the journal as on the local backend: ``node_start`` (with the
container id and its host pid) when the backend starts a node, ``node_exit`` (with the
exit code) from the daemon's ``die`` events for this run's label, read on a thread.

Teardown (idempotent, and the run calls it in ``finally`` on every exit path): unpause,
``compose down -v``, then remove by label anything left (``compose.cleanup``). A
harness killed with SIGKILL cannot tear down; ``chaosloco down --all`` removes what it
left by the ``chaosloco`` label.
"""
from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from compose import cleanup, compose_file
from compose.cli import ComposeCommand, find_compose
from compose.compose_file import NODE_LABEL, RUN_LABEL
from harness.backend import ClusterSpec
from harness.errors import InfraError
from harness.journal import Journal
from trainers import config as trainer_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SYNCER, TOXIPROXY = "syncer", "toxiproxy"
CGROUP_ENV = "CHAOSLOCO_CGROUP_PARENT"
IMAGE_ENV = "CHAOSLOCO_IMAGE"  # use this prebuilt image (compose/Dockerfile) instead of the offline one
_POLL_S = 0.1  # how often a bounded wait re-checks its event
_NET_LABEL = "com.docker.compose.network"  # set by Compose v1 and v2 on the networks it creates


class ComposeBackend:
    name = "compose"

    def __init__(self, *, journal: Journal | None = None, client=None, compose: ComposeCommand | None = None,
                 start_timeout_s: float = 120.0, log=None) -> None:
        """Checks at once that a daemon answers and Compose exists: without them the
        run stops here with one line and exit code 3, before any node starts."""
        from compose.image import docker_client

        self.journal = journal
        self.start_timeout_s = start_timeout_s
        self._client = client or docker_client()
        self._compose = compose or find_compose()
        self._log = log
        self._spec: ClusterSpec | None = None
        self._project = ""
        self._file: Path | None = None
        self._doc: dict[str, Any] = {}
        self._image = ""
        self._containers: dict[str, str] = {}  # node -> container id
        self._ports: dict[str, int] = {}  # node -> published host port (toxiproxy API, syncer control)
        self._shares: dict[str, float] = {}
        self._baseline: dict[str, float] = {}
        self._events = None  # the daemon's event stream for this run (closed at teardown)
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._torn_down = False

    # ---- start -------------------------------------------------------------------
    def start(self, spec: ClusterSpec) -> None:
        from compose.image import container_python, ensure_image, mounted_runtime_dirs
        from faults.link_adapter import ToxiproxyAdapter

        if self._spec is not None:
            raise InfraError("this compose backend already started a cluster")
        self._spec = spec
        self._project = compose_file.project_name(spec.run_id)
        run_dir = Path(spec.run_dir).resolve()
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)  # before Docker would create it as root
        _ensure_run_files(spec)
        portable = os.environ.get(IMAGE_ENV)
        if portable:  # built from compose/Dockerfile where a registry is reachable
            self._image = portable
            rt = compose_file.portable_runtime(portable)
        else:
            self._image = ensure_image(self._client, log=self._log)
            rt = compose_file.Runtime(
                image=self._image, python=container_python(), project_root=PROJECT_ROOT,
                mounts_ro=tuple(m for m in mounted_runtime_dirs() if not _inside(m, PROJECT_ROOT)))
        rt = dataclasses.replace(rt, cgroup_parent=self._cgroup_parent())
        self._doc = compose_file.render(spec, rt)
        self._file = compose_file.write(spec, rt, run_dir / "compose.yaml")
        self._start_watcher()

        self._up([TOXIPROXY, SYNCER])
        _wait_http(f"{self.toxiproxy_url()}/version", timeout_s=self.start_timeout_s,
                   alive=lambda: self.is_running(TOXIPROXY), what="the Toxiproxy API")
        links = ToxiproxyAdapter(self.toxiproxy_url())
        for i, node in enumerate(spec.learner_names):
            links.create_proxy(node, f"0.0.0.0:{compose_file.link_port(i)}",
                               f"{SYNCER}:{compose_file.SYNCER_PORT}")
        _wait_http(f"{self.control_url()}/status", timeout_s=self.start_timeout_s,
                   alive=lambda: self.is_running(SYNCER), what="the synchronizer's control port")
        for i, node in enumerate(spec.learner_names):
            if i < len(spec.cpu_shares) and spec.cpu_shares[i] is not None:
                self._baseline[node] = self._shares[node] = float(spec.cpu_shares[i])
        self._up(spec.learner_names)

    def _cgroup_parent(self) -> str | None:
        """``/`` with the cgroupfs driver, so that a container competes for CPU like one
        host process (see compose.compose_file); ``CHAOSLOCO_CGROUP_PARENT`` overrides
        (empty: Docker's default). The systemd driver wants slice names: left alone."""
        if CGROUP_ENV in os.environ:
            return os.environ[CGROUP_ENV] or None
        try:
            driver = self._client.info().get("CgroupDriver")
        except Exception:  # an old daemon without the field: keep Docker's default
            return None
        return "/" if driver == "cgroupfs" else None

    def _up(self, nodes: list[str]) -> None:
        assert self._compose is not None and self._file is not None
        self._compose.run(self._project, self._file, "up", "-d", "--no-deps", *nodes,
                          timeout_s=self.start_timeout_s)
        for node in nodes:
            c = self._find(node)
            if c is None:
                raise InfraError(f"compose up reported success but no container of {node} exists")
            self._containers[node] = c.id
            self._node_started(node, c, "initial")

    def _find(self, node: str):
        assert self._spec is not None and self._client is not None
        found = self._client.containers.list(
            all=True, filters={"label": [f"{RUN_LABEL}={self._spec.run_id}", f"{NODE_LABEL}={node}"]})
        return found[0] if found else None

    def _node_started(self, node: str, c, reason: str) -> None:
        c.reload()
        if node in (SYNCER, TOXIPROXY):
            self._ports[node] = _published_port(c, compose_file.CONTROL_PORT if node == SYNCER
                                                else compose_file.TOXIPROXY_API_PORT)
        self._record("node_start", node=node, container=c.short_id, pid=c.attrs["State"].get("Pid"),
                     reason=reason)

    def _start_watcher(self) -> None:
        """``node_exit`` from the daemon's ``die`` events; subscribed before anything starts."""
        import docker
        assert self._spec is not None
        events_client = docker.from_env(timeout=30)
        self._events = events_client.events(decode=True, filters={
            "type": "container", "event": "die", "label": f"{RUN_LABEL}={self._spec.run_id}"})

        def watch(stream) -> None:
            try:
                for ev in stream:
                    attrs = ev.get("Actor", {}).get("Attributes", {})
                    code = attrs.get("exitCode")
                    self._record("node_exit", node=attrs.get(NODE_LABEL, "?"), container=ev.get("id", "")[:12],
                                 code=int(code) if code is not None else None)
            except Exception:
                pass  # the stream was closed by teardown (or the daemon went away)
            finally:
                events_client.close()

        self._watcher = threading.Thread(target=watch, args=(self._events,), name="compose-events", daemon=True)
        self._watcher.start()

    def _record(self, kind: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.record(kind, **fields)

    # ---- addresses -----------------------------------------------------------------
    def toxiproxy_url(self) -> str:
        return f"http://127.0.0.1:{self._ports.get(TOXIPROXY, 0)}"

    def control_url(self) -> str:
        return f"http://127.0.0.1:{self._ports.get(SYNCER, 0)}"

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every node with its container (cluster.json for ``chaosloco up``)."""
        return {node: {"container": cid[:12]} for node, cid in self._containers.items()}

    # ---- node actions --------------------------------------------------------------
    def _container(self, node: str):
        import docker
        if self._client is None or node not in self._containers:
            raise InfraError(f"no node {node!r} in this cluster (nodes: {', '.join(self._containers) or 'none'})")
        try:
            return self._client.containers.get(self._containers[node])
        except docker.errors.NotFound:
            raise InfraError(f"the container of {node} is gone (removed outside chaosloco?)") from None

    def is_running(self, node: str) -> bool:
        return self._container(node).status in ("running", "paused", "restarting")

    def kill(self, node: str) -> None:
        c = self._container(node)
        if c.status == "paused":
            c.unpause()  # SIGKILL to a frozen cgroup v1 task waits for the thaw
        if c.status in ("running", "paused", "restarting"):
            _ignore_conflict(lambda: c.kill())
            _wait_not_running(c, 10.0, node)

    def stop(self, node: str, timeout_s: float = 10.0) -> None:
        c = self._container(node)
        if c.status == "paused":
            c.unpause()  # a frozen node cannot handle SIGTERM
        if c.status in ("running", "restarting", "paused"):
            c.stop(timeout=max(0, math.ceil(timeout_s)))  # SIGTERM, SIGKILL after the timeout

    def start_node(self, node: str) -> None:
        c = self._container(node)
        if c.status in ("running", "paused", "restarting"):
            return
        c.start()
        self._node_started(node, c, "restart")

    def pause(self, node: str) -> None:
        c = self._container(node)
        if c.status == "running":
            _ignore_conflict(c.pause)

    def resume(self, node: str) -> None:
        c = self._container(node)
        if c.status == "paused":
            _ignore_conflict(c.unpause)

    def signal(self, node: str, signum: int) -> None:
        c = self._container(node)
        if c.status != "running":
            raise InfraError(f"cannot signal {node}: its container is {c.status}")
        c.kill(signal=int(signum))

    def throttle(self, node: str, cpu_share: float | None) -> None:
        """A CFS quota through ``docker update``; it persists in the container's config,
        so a node restarted later comes back at the same limit (as on the local backend)."""
        c = self._container(node)
        if cpu_share is None:
            self._shares.pop(node, None)
            c.update(cpu_quota=-1, cpu_period=compose_file.CPU_PERIOD_US)
        else:
            self._shares[node] = float(cpu_share)
            c.update(cpu_quota=compose_file.cpu_quota(float(cpu_share)), cpu_period=compose_file.CPU_PERIOD_US)

    def baseline_cpu_share(self, node: str) -> float | None:
        return self._baseline.get(node)

    @property
    def throttle_method(self) -> str:
        return "docker-cpu-quota"

    def _networks_of(self, node: str):
        """The Docker networks ``node`` belongs to by the compose file."""
        assert self._spec is not None and self._client is not None
        wanted = set(self._doc.get("services", {}).get(node, {}).get("networks", []))
        nets = self._client.networks.list(filters={"label": f"{RUN_LABEL}={self._spec.run_id}"})
        return [n for n in nets if n.attrs.get("Labels", {}).get(_NET_LABEL) in wanted]

    def disconnect_network(self, node: str) -> None:
        """An IP-level partition: the node leaves every network it is on (its sockets see
        unreachable peers; nothing tells the other side)."""
        c = self._container(node)
        attached = set(c.attrs.get("NetworkSettings", {}).get("Networks", {}))
        for net in self._networks_of(node):
            if net.name in attached:
                net.disconnect(c, force=True)

    def reconnect_network(self, node: str) -> None:
        c = self._container(node)
        attached = set(c.attrs.get("NetworkSettings", {}).get("Networks", {}))
        for net in self._networks_of(node):
            if net.name not in attached:
                net.connect(c, aliases=[node])  # the service name: how the others resolve it

    # ---- teardown ------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Unpause, ``compose down -v``, remove by label what is left; idempotent.
        Returns what could not be removed."""
        with self._lock:
            if self._spec is None or self._client is None:
                return []  # nothing was started
            if not self._torn_down:
                self._save_foreign_logs()
                for c in self._client.containers.list(filters={"label": f"{RUN_LABEL}={self._spec.run_id}",
                                                               "status": "paused"}):
                    _ignore_conflict(c.unpause)
                if self._compose is not None and self._file is not None and self._file.exists():
                    try:
                        self._compose.run(self._project, self._file, "down", "-v", "--remove-orphans",
                                          "--timeout", "2", timeout_s=120.0)
                    except InfraError:
                        pass  # the label sweep below removes what compose could not
            _removed, failed = cleanup.remove_labelled(self._client, self._spec.run_id)
            self._close_watcher()
            self._torn_down = True
            # What resisted removal (with the daemon's reason), else anything that
            # appeared after the sweep; empty is clean.
            return failed or self.leftovers()

    def _close_watcher(self) -> None:
        if self._events is not None:
            try:
                self._events.close()
            except Exception:
                pass  # already closed by the daemon
            self._events = None
        if self._watcher is not None:
            self._watcher.join(timeout=5.0)
            self._watcher = None

    def _save_foreign_logs(self) -> None:
        """Shopify's image cannot write into the run folder itself; keep its output."""
        assert self._spec is not None
        if not self._spec.official_toxiproxy or TOXIPROXY not in self._containers:
            return
        try:
            data = self._container(TOXIPROXY).logs(stdout=True, stderr=True)
            (Path(self._spec.run_dir) / "logs" / "toxiproxy.log").write_bytes(data)
        except Exception:
            pass  # logs are a convenience; teardown must go on

    def leftovers(self) -> list[str]:
        if self._spec is None or self._client is None:
            return []
        try:
            return cleanup.labelled(self._client, self._spec.run_id)
        except Exception as e:
            return [f"Docker objects of run {self._spec.run_id} not checked: {e}"]

    # ---- chaosloco up / inject / down ------------------------------------------------
    def describe(self) -> dict[str, Any]:
        assert self._spec is not None
        return {"backend": self.name, "run_id": self._spec.run_id, "run_dir": str(self._spec.run_dir),
                "toxiproxy_url": self.toxiproxy_url(), "control_url": self.control_url(),
                "project": self._project, "compose_file": str(self._file), "image": self._image,
                "compose": list(self._compose.argv) if self._compose else None,
                "nodes": self.nodes(), "baseline_cpu_shares": self._baseline,
                "throttle_method": self.throttle_method}

    @classmethod
    def attach(cls, cluster: dict[str, Any], spec: ClusterSpec, *, journal: Journal | None = None) -> "ComposeBackend":
        """Re-creates a backend for a cluster left running by ``chaosloco up``."""
        from compose.image import docker_client
        import yaml

        b = cls(journal=journal, client=docker_client(), compose=(
            ComposeCommand(tuple(cluster["compose"]), "attached") if cluster.get("compose") else None))
        b._spec = spec
        b._project = cluster.get("project") or compose_file.project_name(spec.run_id)
        b._file = Path(cluster["compose_file"]) if cluster.get("compose_file") else None
        if b._file is not None and b._file.exists():
            b._doc = yaml.safe_load(b._file.read_text()) or {}
        b._image = cluster.get("image", "")
        b._baseline = {k: float(v) for k, v in cluster.get("baseline_cpu_shares", {}).items()}
        b._shares = dict(b._baseline)
        for c in b._client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={spec.run_id}"}):
            node = c.labels.get(NODE_LABEL)
            if node:
                b._containers[node] = c.id
                if node in (SYNCER, TOXIPROXY) and c.status == "running":
                    b._ports[node] = _published_port(c, compose_file.CONTROL_PORT if node == SYNCER
                                                     else compose_file.TOXIPROXY_API_PORT)
        return b


# ---- helpers ------------------------------------------------------------------------
def _inside(path: Path, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root)
        return True
    except ValueError:
        return False


def _ensure_run_files(spec: ClusterSpec) -> None:
    """config.json and the secret, when the caller has not written them (as local does)."""
    run_dir = Path(spec.run_dir)
    if not (run_dir / "config.json").exists():
        trainer_config.save(spec.trainer, run_dir / "config.json")
    secret = run_dir / "secret"
    if not secret.exists():
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(os.urandom(32).hex())


def _published_port(c, port: int) -> int:
    bindings = (c.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
    for b in bindings:
        if b.get("HostIp") in ("127.0.0.1", "0.0.0.0", "") and b.get("HostPort"):
            return int(b["HostPort"])
    raise InfraError(f"container {c.name} publishes no host port for {port}/tcp (status {c.status})")


def _wait_http(url: str, *, timeout_s: float, alive, what: str) -> None:
    """Until ``url`` gives any HTTP answer. A TCP connect is not enough: Docker's port
    proxy accepts on the host port before anything listens in the container."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2.0):
                return
        except urllib.error.HTTPError:
            return  # an HTTP error status is still an answer
        except (OSError, ValueError):
            pass
        if not alive():
            raise InfraError(f"waiting for {what} at {url}: its container exited first (see the run's logs/)")
        if time.monotonic() > deadline:
            raise InfraError(f"waiting for {what} at {url}: no answer within {timeout_s:.0f} s")
        time.sleep(_POLL_S)


def _wait_not_running(c, timeout_s: float, node: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        c.reload()
        if c.status not in ("running", "paused", "restarting"):
            return
        if time.monotonic() > deadline:
            raise InfraError(f"{node} ({c.short_id}) still {c.status} {timeout_s:.0f} s after SIGKILL")
        time.sleep(_POLL_S)


def _ignore_conflict(action) -> None:
    """Docker answers 409 when the state already is what we asked for (a race with the
    node's own exit, say); the action is then done."""
    import docker
    try:
        action()
    except docker.errors.APIError as e:
        if e.status_code != 409:
            raise
