"""corrupt: silent data corruption; the learner's next push carries NaN or a huge norm.

The learner honours SIGUSR1 (NaN) and SIGUSR2 (huge norm) (docs/CONTRACTS.md), which
works for processes and containers alike. It is a one-shot: there is nothing to heal,
the synchronizer must reject the update (SPEC §3 item 3).
"""
from __future__ import annotations

import signal

from faults.base import FaultContext
from faults.registry import param
from harness.errors import ConfigError

SIGNALS = {"nan": signal.SIGUSR1, "norm": signal.SIGUSR2}


class Corrupt:
    kind = "corrupt"

    def inject(self, ctx: FaultContext) -> None:
        value = param(ctx, "value", "nan", cast=str)
        if value not in SIGNALS:
            raise ConfigError("must be nan or norm", key=f"{ctx.fault_id}.params.value", value=value)
        ctx.backend.signal(ctx.target, SIGNALS[value])

    def heal(self, ctx: FaultContext) -> None:
        """One-shot fault: nothing to undo."""
