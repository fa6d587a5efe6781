"""Fault injectors registered by kind, and the one wrapper every caller goes through.

Each fault lives in its own module (``faults/kill.py``, ``faults/link_toxic.py``, ...)
behind the small ``faults.base.Fault`` protocol, as Toxiproxy keeps one toxic per file.
``ActiveFault`` is what the run and ``chaosloco inject`` hold for a fault in flight: it
journals ``fault_inject`` / ``fault_heal`` exactly once each and makes heal idempotent
on top of each fault's own idempotent heal, so the run can call it on every exit path
(a timer, the end of the run, Ctrl-C) without caring which already ran.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

from faults.base import Fault, FaultContext
from harness.errors import ConfigError
from harness.model import FaultKind


def _registry() -> dict[FaultKind, Callable[[], Fault]]:
    # Imported here so that importing the registry stays cheap and cycle-free.
    from faults import corrupt, disconnect, flap, kill, link_down, link_toxic, pause, stop, syncer_crash, throttle

    table: dict[FaultKind, Callable[[], Fault]] = {
        FaultKind.KILL: kill.Kill,
        FaultKind.STOP: stop.Stop,
        FaultKind.PAUSE: pause.Pause,
        FaultKind.THROTTLE: throttle.Throttle,
        FaultKind.SYNCER_CRASH: syncer_crash.SyncerCrash,
        FaultKind.LINK_DOWN: link_down.LinkDown,
        FaultKind.FLAP: flap.Flap,
        FaultKind.DISCONNECT: disconnect.Disconnect,
        FaultKind.CORRUPT: corrupt.Corrupt,
    }
    for kind in link_toxic.TOXIC_KINDS:
        table[kind] = link_toxic.factory(kind)
    return table


def kinds() -> list[str]:
    return sorted(k.value for k in _registry())


def create(kind: FaultKind | str) -> Fault:
    """A fresh injector for ``kind``; an unknown kind is the user's mistake."""
    try:
        kind = FaultKind(kind)
    except ValueError:
        raise ConfigError(f"unknown fault kind; known: {', '.join(kinds())}", key="fault", value=kind) from None
    return _registry()[kind]()


@dataclasses.dataclass
class ActiveFault:
    """One fault in flight: inject once, heal at most once (however often asked)."""

    fault: Fault
    ctx: FaultContext
    planned_s: float | None = None
    injected_at: float | None = None  # wall clock, as the journal's ``t``
    healed_at: float | None = None
    _inject_started: bool = False

    @property
    def kind(self) -> str:
        return self.fault.kind

    @property
    def active(self) -> bool:
        return self._inject_started and self.healed_at is None

    def inject(self) -> None:
        if self._inject_started:
            return
        self._inject_started = True  # before inject: a partial inject must still be healed
        entry = self.ctx.journal.record(
            "fault_inject", fault_id=self.ctx.fault_id, fault=self.kind, target=self.ctx.target,
            params=dict(self.ctx.params), planned_s=self.planned_s)
        self.injected_at = entry["t"]
        self.fault.inject(self.ctx)

    def heal(self, *, final: bool = False) -> None:
        """Heals; ``final`` (the run is ending) lets process faults skip restarting a
        node that is about to be stopped anyway."""
        if not self._inject_started or self.healed_at is not None:
            return
        self.healed_at = time.time()
        try:
            final_heal = getattr(self.fault, "final_heal", None) if final else None
            (final_heal or self.fault.heal)(self.ctx)
        finally:
            self.ctx.journal.record("fault_heal", fault_id=self.ctx.fault_id, fault=self.kind,
                                    target=self.ctx.target)


def start(kind: FaultKind | str, ctx: FaultContext, *, planned_s: float | None = None) -> ActiveFault:
    """Creates and injects a fault; the caller owns healing the returned ActiveFault."""
    active = ActiveFault(create(kind), ctx, planned_s=planned_s)
    active.inject()
    return active


def node_state(ctx: FaultContext, state: str, cpu_share: float, node: str | None = None) -> None:
    """Journals a change of a node's compute or link state (measurements read these)."""
    ctx.journal.record("node_state", node=node or ctx.target, state=state, cpu_share=float(cpu_share),
                       fault_id=ctx.fault_id)


def param(ctx: FaultContext, name: str, default: Any = None, *, cast: Callable[[Any], Any] = float) -> Any:
    """Reads one fault parameter, naming the fault, key and value when it is malformed."""
    params: Mapping[str, Any] = ctx.params or {}
    if name not in params:
        if default is None:
            raise ConfigError("missing fault parameter", key=f"{ctx.fault_id}.params.{name}")
        return default
    try:
        return cast(params[name])
    except (TypeError, ValueError):
        raise ConfigError("malformed fault parameter", key=f"{ctx.fault_id}.params.{name}",
                          value=params[name]) from None
