"""disconnect: IP-level partition of a node from the cluster network (compose only).

The local backend raises ``Unsupported``; the run rejects such a scenario before it
starts anything.
"""
from __future__ import annotations

from faults.base import FaultContext
from faults.registry import node_state


class Disconnect:
    kind = "disconnect"

    def inject(self, ctx: FaultContext) -> None:
        ctx.backend.disconnect_network(ctx.target)
        node_state(ctx, "partitioned", 1.0)

    def heal(self, ctx: FaultContext) -> None:
        ctx.backend.reconnect_network(ctx.target)
        node_state(ctx, "up", 1.0)
