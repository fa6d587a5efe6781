"""kill: SIGKILL a node (a crash); heal restarts it as a new incarnation.

A kill with a duration is "restart after duration": the run heals it then. At the end
of a run (``final_heal``) the node is left down, since it would only be stopped again.
"""
from __future__ import annotations

from faults.base import FaultContext
from faults.registry import node_state


class Kill:
    kind = "kill"

    def inject(self, ctx: FaultContext) -> None:
        node_state(ctx, "down", 0.0)  # first: the node may die between the kill and the record
        ctx.backend.kill(ctx.target)

    def heal(self, ctx: FaultContext) -> None:
        if not ctx.backend.is_running(ctx.target):
            ctx.backend.start_node(ctx.target)
            node_state(ctx, "up", 1.0)

    def final_heal(self, ctx: FaultContext) -> None:
        """The run is ending: the node stays down; nothing to undo."""
