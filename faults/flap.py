"""flap: a learner's link goes down and up every ``params.period_s`` until healed.

The toggling runs in a daemon thread that waits on an Event, so heal stops it at once
(no sleep runs past a heal), joins it with a bound, and leaves the link enabled.
Each transition is journaled as a ``node_state`` so measurements see every outage.
"""
from __future__ import annotations

import threading

from faults.base import FaultContext
from faults.registry import node_state, param
from harness.errors import ConfigError


class Flap:
    kind = "flap"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.transitions = 0

    def inject(self, ctx: FaultContext) -> None:
        period = param(ctx, "period_s", 2.0)
        if period <= 0:
            raise ConfigError("must be > 0", key=f"{ctx.fault_id}.params.period_s", value=period)
        self._set(ctx, enabled=False)
        self._thread = threading.Thread(target=self._toggle, args=(ctx, period),
                                        name=f"flap-{ctx.target}", daemon=True)
        self._thread.start()

    def _set(self, ctx: FaultContext, *, enabled: bool) -> None:
        node_state(ctx, "up" if enabled else "partitioned", 1.0)
        ctx.links.set_enabled(ctx.target, enabled)
        self.transitions += 1

    def _toggle(self, ctx: FaultContext, period: float) -> None:
        enabled = False
        while not self._stop.wait(period):
            enabled = not enabled
            try:
                self._set(ctx, enabled=enabled)
            except Exception:  # the proxy server may be gone at teardown; heal retries once
                return

    def heal(self, ctx: FaultContext) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        ctx.links.set_enabled(ctx.target, True)
        node_state(ctx, "up", 1.0)
