"""link_down: disable a learner's proxy (a partition); heal enables it again.

Toxiproxy closes the link's open connections when a proxy is disabled and refuses new
ones, which is what a partition looks like to both ends. The learner keeps computing,
so its compute share stays 1.0 (network faults do not lower the availability bound).
"""
from __future__ import annotations

from faults.base import FaultContext
from faults.registry import node_state


class LinkDown:
    kind = "link_down"

    def inject(self, ctx: FaultContext) -> None:
        node_state(ctx, "partitioned", 1.0)
        ctx.links.set_enabled(ctx.target, False)

    def heal(self, ctx: FaultContext) -> None:
        ctx.links.set_enabled(ctx.target, True)
        node_state(ctx, "up", 1.0)
