"""stop: graceful stop (SIGTERM, SIGKILL after a bound); heal starts the node again."""
from __future__ import annotations

from faults.base import FaultContext
from faults.registry import node_state, param


class Stop:
    kind = "stop"

    def inject(self, ctx: FaultContext) -> None:
        node_state(ctx, "down", 0.0)
        ctx.backend.stop(ctx.target, timeout_s=param(ctx, "timeout_s", 10.0))

    def heal(self, ctx: FaultContext) -> None:
        if not ctx.backend.is_running(ctx.target):
            ctx.backend.start_node(ctx.target)
            node_state(ctx, "up", 1.0)

    def final_heal(self, ctx: FaultContext) -> None:
        """The run is ending: the node stays stopped."""
