"""limit_data: pass exactly ``bytes`` bytes in this direction, then close the connection.

The count is per connection and per direction; the close comes after the allowed bytes
were flushed to the peer, so the peer reads exactly ``bytes`` bytes and then EOF.
"""
from __future__ import annotations

from faults.toxiproxy.toxics import register
from faults.toxiproxy.toxics.base import Emit, LinkControl, Toxic


@register
class LimitData(Toxic):
    type_name = "limit_data"
    defaults = {"bytes": 0}
    bytes: int

    def __init__(self, attributes, rng) -> None:
        super().__init__(attributes, rng)
        self._passed = 0

    async def pipe(self, data: bytes, emit: Emit, link: LinkControl) -> None:
        room = self.bytes - self._passed
        if len(data) < room:
            self._passed += len(data)
            await emit(data)
            return
        if room > 0:
            await emit(data[:room])
        self._passed = self.bytes
        link.close()
