"""reset_peer: on the first data, wait ``timeout`` ms, then reset the connection (RST).

Both sockets are closed with SO_LINGER 0, so each peer sees "connection reset by peer"
and unsent data is discarded, as with Toxiproxy's reset_peer. If the toxic is removed
while it waits, the data it held goes on and nothing is reset.
"""
from __future__ import annotations

from faults.toxiproxy.toxics import register
from faults.toxiproxy.toxics.base import Emit, LinkControl, Toxic


@register
class ResetPeer(Toxic):
    type_name = "reset_peer"
    defaults = {"timeout": 0}
    timeout: int

    async def pipe(self, data: bytes, emit: Emit, link: LinkControl) -> None:
        if await link.wait_until(link.now() + self.timeout / 1000.0, self):
            link.reset()
            return
        await emit(data)
