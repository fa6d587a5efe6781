"""throttle: limit a node to ``params.cpu_share`` cores (slower hardware).

Heal returns the node to its baseline share from the scenario (None = unlimited), which
the backend remembers, so throttling a node that already runs on a slow baseline and
healing it restores the baseline rather than lifting every limit.
"""
from __future__ import annotations

from faults.base import FaultContext
from faults.registry import node_state, param
from harness.errors import ConfigError


class Throttle:
    kind = "throttle"

    def inject(self, ctx: FaultContext) -> None:
        share = param(ctx, "cpu_share")
        if share <= 0:
            raise ConfigError("must be > 0", key=f"{ctx.fault_id}.params.cpu_share", value=share)
        node_state(ctx, "throttled", min(share, 1.0))
        ctx.backend.throttle(ctx.target, share)

    def heal(self, ctx: FaultContext) -> None:
        baseline = getattr(ctx.backend, "baseline_cpu_share", lambda node: None)(ctx.target)
        ctx.backend.throttle(ctx.target, baseline)
        node_state(ctx, "up", 1.0)
