"""The per-run compose file, generated from a ``ClusterSpec``.

Everything derives from the run id, so parallel runs never collide:

* project ``chaosloco-<run_id>``; Compose names containers and networks after it;
* every service and network carries the labels ``chaosloco=1`` (``chaosloco down --all``
  finds strays by it), ``chaosloco.run=<run_id>`` and, on services, ``chaosloco.node``;
* two private networks: ``core`` (synchronizer + proxy server) and ``links`` (proxy
  server + learners, ``internal``: no route out). A learner is on ``links`` only, so
  the one way it can reach the synchronizer is its own proxy ``toxiproxy:20000+i``;
  disconnecting it from ``links`` is a partition at the IP level;
* inside containers the ports are fixed (each has its own network namespace); the
  harness reaches the Toxiproxy API and the synchronizer's control port through
  ephemeral host ports published on 127.0.0.1 (``127.0.0.1::PORT``) and read back;
* the offline runtime image (compose.image) runs the host's interpreter; the source
  tree and the venv are bind-mounted read-only at their host paths, the run folder
  read-write at its host path, so ``events.jsonl`` and ``logs/<node>.log`` land on the
  host and every path in the config means the same inside and out;
* containers run as the harness's uid:gid, so the run folder stays the user's;
* a corpus folder named in the trainer config (``data``) is mounted read-only too;
* fair CPU: under Docker's default parent cgroup (``/docker``) all containers *together*
  weigh as much as one host process in the CPU scheduler (cgroup v1, cgroupfs driver),
  so on a busy machine -- CI runs two test workers -- the learners starve next to
  host processes and their throughput says nothing. With ``cgroup_parent: /`` each
  container is one scheduling entity beside the host's processes, like a local learner
  process (the backend sets it for the cgroupfs driver; Docker still removes the cgroups);
* mixed hardware: a learner's ``cpu_shares`` entry becomes a CFS quota
  (``cpu_quota``/``cpu_period``, the same knobs ``docker update`` changes for the
  throttle fault: Docker refuses to mix them with ``cpus``).

The file format is Compose 2.4: it has resource limits without swarm's ``deploy``
and is read by both ``docker-compose`` v1 and ``docker compose`` v2.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from harness.backend import ClusterSpec
from harness.errors import ConfigError

SYNCER_PORT = 7000  # inside the syncer container
CONTROL_PORT = 7001
TOXIPROXY_API_PORT = 8474  # inside the toxiproxy container
LINK_PORT_BASE = 20000  # proxy learner-i listens on LINK_PORT_BASE + i inside the toxiproxy container
CPU_PERIOD_US = 100_000
CORE_NET, LINKS_NET = "core", "links"
LABEL, RUN_LABEL, NODE_LABEL = "chaosloco", "chaosloco.run", "chaosloco.node"
OFFICIAL_TOXIPROXY_IMAGE = os.environ.get("CHAOSLOCO_TOXIPROXY_IMAGE", "ghcr.io/shopify/toxiproxy:2.12.0")
STOP_GRACE_S = 10

_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where the containers find their interpreter and code (see compose.image)."""

    image: str  # chaosloco-runtime:<hash>
    python: str  # interpreter path valid inside the image + mounts
    project_root: Path  # the source tree, mounted read-only, the working directory
    mounts_ro: tuple[Path, ...] = ()  # further read-only mounts (the venv when outside the tree)
    mount_tree: bool = True  # False for an image with the project baked in (compose/Dockerfile)
    cgroup_parent: str | None = None  # "/" puts each container beside host processes (see below)
    user: str = dataclasses.field(default_factory=lambda: f"{os.getuid()}:{os.getgid()}")


def portable_runtime(image: str) -> Runtime:
    """A prebuilt image from ``compose/Dockerfile``: the project is baked in at
    /opt/chaosloco, its interpreter is ``python`` on PATH; nothing of the host is mounted
    but the run folder."""
    return Runtime(image=image, python="python", project_root=Path("/opt/chaosloco"), mount_tree=False)


def project_name(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ConfigError("must be lower-case letters, digits and '-' (at most 41)", key="run_id", value=run_id)
    return f"chaosloco-{run_id}"


def link_port(learner: int) -> int:
    return LINK_PORT_BASE + learner


def cpu_quota(share: float) -> int:
    """CFS quota in microseconds per CPU_PERIOD_US for ``share`` cores (Docker's minimum is 1 ms)."""
    return max(1000, int(round(share * CPU_PERIOD_US)))


def _labels(run_id: str, node: str | None = None) -> dict[str, str]:
    labels = {LABEL: "1", RUN_LABEL: run_id}
    if node is not None:
        labels[NODE_LABEL] = node
    return labels


def _python_service(spec: ClusterSpec, rt: Runtime, node: str, args: list[str]) -> dict[str, Any]:
    """A node running ``python -m compose.launch`` (log redirection) then ``args``."""
    run_dir = str(Path(spec.run_dir).resolve())
    log = f"{run_dir}/logs/{node}.log"
    volumes = [f"{rt.project_root}:{rt.project_root}:ro"] if rt.mount_tree else []
    volumes += [f"{m}:{m}:ro" for m in rt.mounts_ro]
    if spec.trainer.data:  # a corpus folder of the user's: same path inside, read-only
        data = Path(spec.trainer.data).resolve()
        volumes.append(f"{data}:{data}:ro")
    volumes.append(f"{run_dir}:{run_dir}:rw")
    return {
        "image": rt.image,
        "command": [rt.python, "-m", "compose.launch", "--log", log, "--", *args],
        "working_dir": str(rt.project_root),
        "user": rt.user,
        "environment": {
            "CHAOSLOCO_RUN_ID": spec.run_id,
            "PYTHONPATH": str(rt.project_root),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",  # the tree is read-only in here
            "OMP_NUM_THREADS": "1",  # one intra-op thread per node: learners share few cores
            "MKL_NUM_THREADS": "1",
            "HOME": "/tmp",
            "USER": "chaosloco",  # getpass.getuser() without a passwd entry for the uid
        },
        "volumes": volumes,
        "labels": _labels(spec.run_id, node),
        "stop_grace_period": f"{STOP_GRACE_S}s",
        "restart": "no",
        **_cgroup(rt),
    }


def _cgroup(rt: Runtime) -> dict[str, str]:
    return {"cgroup_parent": rt.cgroup_parent} if rt.cgroup_parent else {}


def render(spec: ClusterSpec, rt: Runtime) -> dict[str, Any]:
    """The compose document for one run, as plain data (yaml.safe_dump writes it)."""
    project_name(spec.run_id)  # validates the id
    run_dir = str(Path(spec.run_dir).resolve())
    services: dict[str, Any] = {}

    if spec.official_toxiproxy:
        toxiproxy = {"image": OFFICIAL_TOXIPROXY_IMAGE,
                     "command": ["-host=0.0.0.0", f"-port={TOXIPROXY_API_PORT}", f"-seed={spec.seed}"],
                     "labels": _labels(spec.run_id, "toxiproxy"), "restart": "no", **_cgroup(rt)}
    else:
        toxiproxy = _python_service(spec, rt, "toxiproxy", [
            "-m", "faults.toxiproxy.server", "--host", "0.0.0.0", "--port", str(TOXIPROXY_API_PORT),
            "--seed", str(spec.seed)])
    toxiproxy["networks"] = [CORE_NET, LINKS_NET]
    toxiproxy["ports"] = [f"127.0.0.1::{TOXIPROXY_API_PORT}"]
    services["toxiproxy"] = toxiproxy

    syncer = _python_service(spec, rt, "syncer", [
        "-m", "trainers.syncer", "--run-dir", run_dir, "--host", "0.0.0.0", "--port", str(SYNCER_PORT),
        "--control-port", str(CONTROL_PORT), "--config", f"{run_dir}/config.json",
        "--secret-file", f"{run_dir}/secret"])
    syncer["networks"] = [CORE_NET]
    syncer["ports"] = [f"127.0.0.1::{CONTROL_PORT}"]
    services["syncer"] = syncer

    for i, node in enumerate(spec.learner_names):
        learner = _python_service(spec, rt, node, [
            "-m", "trainers.learner", "--run-dir", run_dir, "--id", str(i),
            "--syncer", f"toxiproxy:{link_port(i)}", "--secret-file", f"{run_dir}/secret"])
        learner["networks"] = [LINKS_NET]
        if i < len(spec.cpu_shares) and spec.cpu_shares[i] is not None:
            learner["cpu_quota"] = cpu_quota(float(spec.cpu_shares[i]))
            learner["cpu_period"] = CPU_PERIOD_US
        services[node] = learner

    return {
        "version": "2.4",
        "services": services,
        "networks": {
            CORE_NET: {"driver": "bridge", "labels": _labels(spec.run_id)},
            LINKS_NET: {"driver": "bridge", "internal": True, "labels": _labels(spec.run_id)},
        },
    }


def write(spec: ClusterSpec, rt: Runtime, path: Path) -> Path:
    """Writes the compose file (kept in the run folder: a record of what ran)."""
    path.write_text("# generated by chaosloco (compose.compose_file) for run " + spec.run_id + "\n"
                    + yaml.safe_dump(render(spec, rt), sort_keys=False, default_flow_style=False))
    return path
