"""syncer_crash: SIGKILL the synchronizer; heal restarts it on the same ports.

The restarted synchronizer restores from ``DIR/state/`` (SPEC §3 item 4 is checked on
exactly this). Learners keep computing throughout, so no learner's compute share
changes; the synchronizer's own state is journaled for the report.
"""
from __future__ import annotations

from faults.base import FaultContext
from faults.registry import node_state

SYNCER = "syncer"


class SyncerCrash:
    kind = "syncer_crash"

    def inject(self, ctx: FaultContext) -> None:
        node_state(ctx, "down", 0.0, node=SYNCER)
        ctx.backend.kill(SYNCER)

    def heal(self, ctx: FaultContext) -> None:
        if not ctx.backend.is_running(SYNCER):
            ctx.backend.start_node(SYNCER)
            node_state(ctx, "up", 1.0, node=SYNCER)

    def final_heal(self, ctx: FaultContext) -> None:
        """The run is ending: the synchronizer stays down."""
