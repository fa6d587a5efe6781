"""One chaos run, in Chaos Toolkit's shape: start, wait for steady state, inject on a
seeded schedule, heal, collect, tear down -- with healing and teardown in ``finally``.

    run.json, config.json, secret          written first (replayable from run.json alone)
    backend.start                          toxiproxy, synchronizer, learners
    baseline link conditions               the scenario's wide-area latency / bandwidth
    ready                                  every learner's ``joined`` event, by a deadline
    schedule                               inject / heal at their offsets from ``ready``
    end                                    heal everything, SIGTERM learners (they flush),
                                           stop the synchronizer, ``run_end``
    finally                                backend.teardown, ``teardown`` with leftovers

The schedule runs on the main thread against a monotonic clock: it waits on an Event
until the next due action, never longer, and SIGINT / SIGTERM wake it at once. Nodes
are (re)started only from this thread (see harness.local on PR_SET_PDEATHSIG). A
signal turns the run ``interrupted``; an infrastructure error ``infra_failed``; either
way every active fault is healed and the cluster torn down. Measurements and checks
are then computed from the journal and the event log alone (harness.result).
"""
from __future__ import annotations

import dataclasses
import heapq
import json
import os
import platform
import signal
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from faults import registry
from faults.base import FaultContext
from harness.backend import Backend, ClusterSpec
from harness.errors import ChaoslocoError, ConfigError, InfraError
from harness.journal import Journal
from harness.model import FaultEvent, FaultKind, Scenario
from harness.tail import JsonlTail
from trainers import config as trainer_config
from trainers.signal_relay import SignalRelay

STATUS_COMPLETED, STATUS_INTERRUPTED, STATUS_INFRA_FAILED = "completed", "interrupted", "infra_failed"
EXIT_INTERRUPTED = 130  # the shell's convention for "ended by a signal"


class Interrupted(BaseException):
    """Raised on the main thread by SIGINT / SIGTERM; BaseException so that no
    ``except Exception`` in a fault or backend swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclasses.dataclass(frozen=True)
class RunRequest:
    scenario: Scenario
    seed: int
    backend_name: str
    run_dir: Path
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:8])
    baseline_dir: Path | None = None
    stop_timeout_s: float = 20.0  # bound on a learner's graceful flush at the end
    official_toxiproxy: bool = False  # compose: Shopify's image instead of our server


@dataclasses.dataclass
class RunOutcome:
    status: str
    reason: str
    run_dir: Path
    leftovers: list[str]
    error: ChaoslocoError | None = None
    result: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        if self.status == STATUS_INTERRUPTED:
            return EXIT_INTERRUPTED
        if self.status == STATUS_INFRA_FAILED:
            return self.error.exit_code if self.error is not None else 3
        if self.result is None or self.result.get("verdict") != "pass":
            return 1
        return 0


def write_run_files(req: RunRequest) -> None:
    """run.json, config.json and the per-run secret (0600), before anything starts."""
    req.run_dir.mkdir(parents=True, exist_ok=True)
    sc = req.scenario
    versions = {"chaosloco": _version(), "python": platform.python_version()}
    try:
        import torch
        versions["torch"] = torch.__version__
    except ImportError:  # the harness itself never needs torch
        versions["torch"] = None
    meta = {"run_id": req.run_id, "scenario": sc.name, "scenario_path": str(sc.path) if sc.path else None,
            "scenario_text": sc.text, "seed": req.seed, "backend": req.backend_name,
            "trainer": sc.trainer.mode.value, "duration_s": sc.duration_s, "versions": versions,
            "host": socket.gethostname(), "started_at": time.time(), "argv": sys.argv}
    (req.run_dir / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    trainer_config.save(sc.trainer, req.run_dir / "config.json")
    secret = req.run_dir / "secret"
    secret.unlink(missing_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(os.urandom(32).hex())


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("chaosloco")
    except Exception:  # not installed (running from a checkout)
        return "0+unknown"


def cluster_spec(req: RunRequest) -> ClusterSpec:
    sc = req.scenario
    return ClusterSpec(run_id=req.run_id, run_dir=req.run_dir, trainer=sc.trainer,
                       cpu_shares=sc.cpu_shares, links=sc.links, official_toxiproxy=req.official_toxiproxy,
                       seed=req.seed)


def apply_baseline_links(links, spec: ClusterSpec) -> None:
    """The scenario's standing link conditions, as toxics named ``baseline-*``."""
    for i, link in enumerate(spec.links):
        proxy = f"learner-{i}"
        for stream in ("upstream", "downstream"):
            if link.latency_ms or link.jitter_ms:
                links.add_toxic(proxy, name=f"baseline-latency-{stream}", type="latency", stream=stream,
                                attributes={"latency": int(link.latency_ms), "jitter": int(link.jitter_ms)})
            if link.bandwidth_kbps:
                links.add_toxic(proxy, name=f"baseline-bandwidth-{stream}", type="bandwidth", stream=stream,
                                attributes={"rate": int(link.bandwidth_kbps)})


def check_supported(schedule: list[FaultEvent], backend_name: str) -> None:
    """Faults a backend cannot do are bad input: refuse before anything starts."""
    if backend_name == "local":
        for ev in schedule:
            if ev.kind is FaultKind.DISCONNECT:
                raise ConfigError("the local backend cannot disconnect a node from a network; use link_down "
                                  "or --backend compose", key=f"faults.{ev.fault_id}", value=ev.kind.value)


class Run:
    def __init__(self, req: RunRequest, backend: Backend, *, schedule: list[FaultEvent] | None = None,
                 links_factory: Callable[[str], Any] | None = None, journal: Journal | None = None,
                 on_ready: Callable[["Run"], None] | None = None, poll_s: float = 0.1) -> None:
        self.req = req
        self.backend = backend
        if schedule is None:
            from harness.schedule import build_schedule
            schedule = build_schedule(req.scenario, req.seed)
        self.schedule = schedule
        self._links_factory = links_factory
        self.links = None
        self.journal = journal or Journal(req.run_dir / "journal.jsonl")
        self.active: list[registry.ActiveFault] = []
        self.ready_at: float | None = None  # monotonic
        self._on_ready = on_ready
        self._poll_s = poll_s
        self._wake = threading.Event()
        self._wake_from_signal: Callable[[], None] = self._wake.set  # replaced by a relay with the handlers
        self._cleaning = False
        self._pending_signal: int | None = None
        self._started = False

    # ---- signals -------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._pending_signal = self._pending_signal or signum
        self._wake_from_signal()  # not self._wake.set(): see trainers.signal_relay
        if not self._cleaning:
            raise Interrupted(signum)
        # while healing and tearing down, a second Ctrl-C must not cut the cleanup short

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        self._wake_from_signal = SignalRelay(self._wake.set, name="run-wake-relay")
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    # ---- the run ---------------------------------------------------------------------
    def execute(self) -> RunOutcome:
        req = self.req
        status, reason, error = STATUS_COMPLETED, "schedule finished", None
        leftovers: list[str] = []
        previous = self._install_signals()
        try:
            try:
                check_supported(self.schedule, req.backend_name)
                self.journal.record("run_start", run_id=req.run_id, scenario=req.scenario.name,
                                    backend=req.backend_name, trainer=req.scenario.trainer.mode.value,
                                    seed=req.seed, duration_s=req.scenario.duration_s)
                self._start()
                self._wait_ready()
                self._run_schedule()
            except Interrupted as e:
                status, reason = STATUS_INTERRUPTED, f"signal {e}"
            except ChaoslocoError as e:
                status, reason, error = STATUS_INFRA_FAILED, str(e), e
            except Exception as e:  # a bug or an unexpected library error: still clean up
                status, reason = STATUS_INFRA_FAILED, f"{type(e).__name__}: {e}"
                error = InfraError(reason)
            finally:
                self._cleaning = True
                if self._pending_signal and status == STATUS_COMPLETED:
                    status, reason = STATUS_INTERRUPTED, f"signal {signal.Signals(self._pending_signal).name}"
                problems = self._wind_down()
                if problems and status == STATUS_COMPLETED:
                    status, reason = STATUS_INFRA_FAILED, "; ".join(problems)
                    error = InfraError(reason)
                self.journal.record("run_end", status=status, reason=reason)
                leftovers = self._teardown()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if previous:
                self._wake_from_signal.close()
        if self._pending_signal and status == STATUS_COMPLETED:
            status = STATUS_INTERRUPTED
        return RunOutcome(status, reason, req.run_dir, leftovers, error)

    def _start(self) -> None:
        spec = cluster_spec(self.req)
        self._started = True
        self.backend.start(spec)
        factory = self._links_factory
        if factory is None:
            from faults.link_adapter import ToxiproxyAdapter
            factory = ToxiproxyAdapter
        self.links = factory(self.backend.toxiproxy_url())
        apply_baseline_links(self.links, spec)

    def _wait_ready(self) -> None:
        want = set(range(self.req.scenario.trainer.learners))
        joined: set[int] = set()
        tail = JsonlTail(self.req.run_dir / "events.jsonl")
        deadline = time.monotonic() + self.req.scenario.ready_timeout_s
        while True:
            for ev in tail.read_new():
                if ev.get("ev") == "joined":
                    joined.add(int(ev["learner"]))
            if want <= joined:
                break
            dead = [n for n in ["syncer", *(f"learner-{i}" for i in sorted(want - joined))]
                    if not self.backend.is_running(n)]
            if dead:
                raise InfraError(f"{', '.join(dead)} exited before every learner joined "
                                 f"(see {self.req.run_dir / 'logs'})")
            if time.monotonic() > deadline:
                raise InfraError(f"learners {sorted(want - joined)} did not join within "
                                 f"{self.req.scenario.ready_timeout_s:.0f} s (see {self.req.run_dir / 'logs'})")
            self._wake.wait(self._poll_s)
        self.ready_at = time.monotonic()
        self.journal.record("ready", learners=sorted(joined))
        if self._on_ready is not None:
            self._on_ready(self)

    def elapsed(self) -> float:
        return 0.0 if self.ready_at is None else time.monotonic() - self.ready_at

    def _run_schedule(self) -> None:
        """Injects and heals at their offsets; returns when the scenario's time is up."""
        end = self.req.scenario.duration_s
        queue: list[tuple[float, int, str, int]] = []  # (due_s, order, action, index)
        for i, ev in enumerate(self.schedule):
            if ev.at_s < end:
                heapq.heappush(queue, (ev.at_s, 2 * i + 1, "inject", i))
        by_index: dict[int, registry.ActiveFault] = {}
        while True:
            now = self.elapsed()
            if queue and queue[0][0] <= now:
                due, _, action, i = heapq.heappop(queue)
                ev = self.schedule[i]
                if action == "inject":
                    by_index[i] = self._inject(ev)
                    if ev.duration_s is not None and ev.at_s + ev.duration_s < end:
                        # heals sort before injects due at the same instant
                        heapq.heappush(queue, (ev.at_s + ev.duration_s, 2 * i, "heal", i))
                else:
                    by_index[i].heal()
                continue
            if now >= end:
                return
            next_due = min(queue[0][0] if queue else end, end)
            self._wake.wait(max(0.0, next_due - now))

    def _inject(self, ev: FaultEvent) -> registry.ActiveFault:
        ctx = FaultContext(backend=self.backend, links=self.links, journal=self.journal,
                           fault_id=ev.fault_id, target=ev.target, params=dict(ev.params))
        active = registry.ActiveFault(registry.create(ev.kind), ctx, planned_s=ev.at_s)
        self.active.append(active)  # before inject: a partial inject is healed too
        active.inject()
        return active

    # ---- the end -------------------------------------------------------------------
    def _wind_down(self) -> list[str]:
        """Heals every fault, then stops learners gracefully and the synchronizer.
        Each step runs whatever failed before it; problems are returned, not raised."""
        problems: list[str] = []
        if self._started:  # the end of T: from here nodes are healed and stopped, not tested
            self.journal.record("wind_down")
        for active in self.active:
            try:
                active.heal(final=True)
            except Exception as e:
                problems.append(f"heal {active.ctx.fault_id}: {e}")
        if not self._started:
            return problems
        learners = self.req.scenario.trainer.learners
        names = [f"learner-{i}" for i in range(learners)]

        def stop(node: str) -> None:
            # From here the node may no longer compute: the availability bound says so.
            self.journal.record("node_state", node=node, state="down", cpu_share=0.0, fault_id=None)
            try:
                self.backend.resume(node)  # a node left paused could not flush
                if self.backend.is_running(node):
                    self.backend.stop(node, timeout_s=self.req.stop_timeout_s)
            except Exception as e:
                problems.append(f"stop {node}: {e}")

        with ThreadPoolExecutor(max_workers=max(1, learners)) as pool:
            list(pool.map(stop, names))  # every learner flushes at the same time
        stop("syncer")
        return problems

    def _teardown(self) -> list[str]:
        try:
            leftovers = list(self.backend.teardown()) if self._started else []
        except Exception as e:
            leftovers = [f"teardown failed: {e}"]
        self.journal.record("teardown", leftovers=leftovers)
        return leftovers
