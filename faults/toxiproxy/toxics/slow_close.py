"""slow_close: when the source closes, hold the close back by ``delay`` ms.

Data passes unchanged; only the end of stream is late (Toxiproxy's slow_close).
"""
from __future__ import annotations

from faults.toxiproxy.toxics import register
from faults.toxiproxy.toxics.base import LinkControl, Toxic


@register
class SlowClose(Toxic):
    type_name = "slow_close"
    defaults = {"delay": 0}
    delay: int

    async def on_eof(self, link: LinkControl) -> None:
        await link.wait_until(link.now() + self.delay / 1000.0, self)
