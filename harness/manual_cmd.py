"""Manual chaos against a cluster left running: `chaosloco up`, `inject`, `down`.

    chaosloco up SCENARIO [--out DIR] [--backend local|compose] [--trainer MODE]
    chaosloco inject DIR KIND TARGET [--duration S] [--param k=v ...]
    chaosloco down DIR | --all

``up`` starts the scenario's cluster with no schedule, waits until every learner has
joined, writes ``DIR/cluster.json`` (addresses, pids) and returns while the cluster
keeps running (local nodes are started without PR_SET_PDEATHSIG for that). ``inject``
re-attaches to the cluster from cluster.json and journals into DIR's journal; with
``--duration`` it heals after that long (Ctrl-C heals at once), without it the fault
stays until ``down``. ``down`` heals the links, tears the cluster down and journals
``teardown``; ``--all`` removes every chaosloco process, cgroup and labelled container
on this machine, whichever run left it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, InfraError
from harness.journal import Journal
from trainers.config import Mode, parse_assignments

CLUSTER_FILE = "cluster.json"


def _parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    try:
        return p.parse_args(argv)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        raise ConfigError("bad arguments (see usage above)") from None


# ---- up ------------------------------------------------------------------------------
def up_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chaosloco up")
    p.add_argument("scenario", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--backend", choices=("local", "compose"), default="local")
    p.add_argument("--trainer", choices=[m.value for m in Mode])
    args = _parse(p, argv)

    from harness.run import RunRequest, apply_baseline_links, cluster_spec, write_run_files
    from harness.run_cmd import make_backend
    from harness.scenario import load_scenario
    from harness.tail import JsonlTail

    scenario = load_scenario(args.scenario)
    if args.trainer:
        scenario = dataclasses.replace(scenario, trainer=scenario.trainer.replace(mode=Mode(args.trainer)))
    run_id = uuid.uuid4().hex[:8]
    run_dir = args.out or Path("runs") / f"{scenario.name}-up-{run_id}"
    if (run_dir / "run.json").exists():
        raise ConfigError("already holds a run; choose another folder", key="--out", value=str(run_dir))
    req = RunRequest(scenario=scenario, seed=scenario.seed, backend_name=args.backend, run_dir=run_dir,
                     run_id=run_id)
    write_run_files(req)
    journal = Journal(run_dir / "journal.jsonl")
    backend = make_backend(args.backend, journal, detach=True)
    spec = cluster_spec(req)
    journal.record("run_start", run_id=run_id, scenario=scenario.name, backend=args.backend,
                   trainer=scenario.trainer.mode.value, seed=req.seed, duration_s=None, manual=True)
    try:
        backend.start(spec)
        from faults.link_adapter import ToxiproxyAdapter
        apply_baseline_links(ToxiproxyAdapter(backend.toxiproxy_url()), spec)
        _wait_joined(JsonlTail(run_dir / "events.jsonl"), scenario.trainer.learners, backend,
                     scenario.ready_timeout_s)
    except BaseException:
        journal.record("teardown", leftovers=backend.teardown())
        raise
    journal.record("ready", learners=list(range(scenario.trainer.learners)))
    write_cluster(run_dir, backend, args.backend, scenario)
    print(f"cluster {run_id} is up: {scenario.trainer.learners} learners, control {backend.control_url()}")
    print(f"  chaosloco inject {run_dir} kill learner-0 --duration 5")
    print(f"  chaosloco down {run_dir}")
    print(run_dir)
    return 0


def _wait_joined(tail, learners: int, backend, timeout_s: float) -> None:
    joined: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(joined) < learners:
        joined |= {int(e["learner"]) for e in tail.read_new() if e.get("ev") == "joined"}
        if len(joined) >= learners:
            return
        if not backend.is_running("syncer"):
            raise InfraError("the synchronizer exited before every learner joined")
        if time.monotonic() > deadline:
            raise InfraError(f"learners {sorted(set(range(learners)) - joined)} did not join within {timeout_s:.0f} s")
        time.sleep(0.1)  # polling a file another process appends to; bounded by the deadline


def write_cluster(run_dir: Path, backend, backend_name: str, scenario) -> None:
    info = backend.describe() if hasattr(backend, "describe") else {
        "backend": backend_name, "toxiproxy_url": backend.toxiproxy_url(), "control_url": backend.control_url()}
    info["scenario_path"] = str(scenario.path) if scenario.path else None
    (run_dir / CLUSTER_FILE).write_text(json.dumps(info, indent=2) + "\n")


def _attach(run_dir: Path, journal: Journal):
    path = run_dir / CLUSTER_FILE
    try:
        cluster = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"not a cluster started by `chaosloco up` ({e})", file=str(path)) from None
    from harness.backend import ClusterSpec
    from trainers import config as trainer_config

    trainer = trainer_config.load(run_dir / "config.json")
    spec = ClusterSpec(run_id=cluster["run_id"], run_dir=run_dir, trainer=trainer)
    if cluster["backend"] == "local":
        from harness.local import LocalBackend
        return cluster, LocalBackend.attach(cluster, spec, journal=journal)
    from harness.compose_backend import ComposeBackend
    return cluster, ComposeBackend.attach(cluster, spec, journal=journal)


# ---- inject --------------------------------------------------------------------------
def inject_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chaosloco inject")
    p.add_argument("dir", type=Path)
    p.add_argument("kind")
    p.add_argument("target")
    p.add_argument("--duration", type=float, help="heal after this many seconds (default: leave it)")
    p.add_argument("--param", action="append", default=[], help="fault parameter KEY=VALUE (repeatable)")
    args = _parse(p, argv)
    if args.duration is not None and args.duration < 0:
        raise ConfigError("must be >= 0", key="--duration", value=args.duration)

    from faults import registry
    from faults.base import FaultContext
    from faults.link_adapter import ToxiproxyAdapter

    journal = Journal(args.dir / "journal.jsonl")
    cluster, backend = _attach(args.dir, journal)
    nodes = cluster.get("nodes", {})
    if nodes and args.target not in nodes:
        raise ConfigError(f"unknown node; nodes: {', '.join(nodes)}", key="TARGET", value=args.target)
    fault = registry.create(args.kind)
    fault_id = f"m-{uuid.uuid4().hex[:6]}-{args.kind}-{args.target}"
    ctx = FaultContext(backend=backend, links=ToxiproxyAdapter(cluster["toxiproxy_url"]), journal=journal,
                       fault_id=fault_id, target=args.target, params=parse_assignments(args.param, "--param"))
    active = registry.ActiveFault(fault, ctx)
    try:
        active.inject()
        print(f"injected {fault_id}")
        if args.duration is not None:
            done = threading.Event()
            previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
            try:
                done.wait(args.duration)
            except KeyboardInterrupt:
                pass  # Ctrl-C: heal now
            finally:
                signal.signal(signal.SIGTERM, previous)
    finally:
        if args.duration is not None:
            active.heal()
            print(f"healed {fault_id}")
        _update_pids(args.dir, cluster, backend)
    return 0


def _update_pids(run_dir: Path, cluster: dict[str, Any], backend) -> None:
    """A restarted node has a new pid; cluster.json must follow it."""
    if hasattr(backend, "nodes"):
        cluster["nodes"] = backend.nodes()
        (run_dir / CLUSTER_FILE).write_text(json.dumps(cluster, indent=2) + "\n")


# ---- down ----------------------------------------------------------------------------
def down_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chaosloco down")
    p.add_argument("dir", type=Path, nargs="?")
    p.add_argument("--all", action="store_true", help="remove every chaosloco process, cgroup and container here")
    args = _parse(p, argv)
    if args.all:
        left = remove_everything()
        for line in left:
            print(f"left behind: {line}")
        return 3 if left else 0
    if args.dir is None:
        raise ConfigError("give a cluster folder or --all", key="DIR")
    journal = Journal(args.dir / "journal.jsonl")
    cluster, backend = _attach(args.dir, journal)
    left: list[str] = []
    try:
        from faults.link_adapter import ToxiproxyAdapter
        ToxiproxyAdapter(cluster["toxiproxy_url"]).reset()  # every toxic off, every proxy on
    except Exception as e:  # the proxy server may already be gone; teardown still runs
        left.append(f"link reset failed: {e}")
    for node in list(cluster.get("nodes", {})):
        try:
            backend.resume(node)  # pause faults left active: stopped processes cannot exit
        except Exception:
            pass
    journal.record("run_end", status="completed", reason="chaosloco down")
    leftovers = backend.teardown()
    journal.record("teardown", leftovers=leftovers)
    for line in leftovers:
        print(f"left behind: {line}")
    print(f"cluster {cluster['run_id']} is down")
    return 3 if leftovers else 0


def remove_everything(*, run_id: str | None = None) -> list[str]:
    """Every process carrying chaosloco's run id marker (or one run's), every chaosloco
    cgroup, and every labelled container; returns what survived."""
    from harness import cpu_throttle, local_proc
    from harness.local import RUN_ID_ENV

    procs = local_proc.processes_with_env(RUN_ID_ENV, run_id)
    for pid, _ in procs:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(local_proc.pid_alive(pid) for pid, _ in procs):
        time.sleep(0.05)  # waiting for processes we did not fork: no wait() possible
    left = [f"process {pid}: {cmd[:100]}" for pid, cmd in procs if local_proc.pid_alive(pid)]
    for group in cpu_throttle.stale_run_groups():
        if run_id is None or group.name == f"chaosloco-{run_id}":
            left += cpu_throttle.remove_group(group)
    if run_id is None:
        try:
            from compose.cleanup import remove_all_labelled
        except ImportError:
            pass
        else:
            try:
                leftovers = remove_all_labelled()
                left += [str(x) for x in (leftovers or [])]
            except Exception as e:  # no Docker daemon: nothing of ours can run there either
                print(f"containers not checked: {e}")
    return left
