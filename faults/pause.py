"""pause: SIGSTOP (or docker pause) a node for a while: a hang or a straggler."""
from __future__ import annotations

from faults.base import FaultContext
from faults.registry import node_state


class Pause:
    kind = "pause"

    def inject(self, ctx: FaultContext) -> None:
        node_state(ctx, "paused", 0.0)
        ctx.backend.pause(ctx.target)

    def heal(self, ctx: FaultContext) -> None:
        # resume is harmless on a running or already resumed node, so heal is idempotent.
        ctx.backend.resume(ctx.target)
        node_state(ctx, "up", 1.0)
