"""bandwidth: cap the direction at ``rate`` KB/s (1 KB = 1000 bytes, as Toxiproxy).

Data is released in slices of at most 100 ms worth, each at the time the rate allows,
so a big chunk streams out smoothly instead of in one late burst. ``rate`` 0 means no
limit (Toxiproxy passes data through unchanged then too).
"""
from __future__ import annotations

from faults.toxiproxy.toxics import register
from faults.toxiproxy.toxics.base import Emit, LinkControl, Toxic


@register
class Bandwidth(Toxic):
    type_name = "bandwidth"
    defaults = {"rate": 0}
    rate: int

    def __init__(self, attributes, rng) -> None:
        super().__init__(attributes, rng)
        self._free_at = 0.0  # monotonic time the link may send its next byte

    async def pipe(self, data: bytes, emit: Emit, link: LinkControl) -> None:
        if self.rate <= 0:
            await emit(data)
            return
        per_s = self.rate * 1000
        step = max(1, per_s // 10)
        for start in range(0, len(data), step):
            piece = data[start:start + step]
            self._free_at = max(self._free_at, link.now()) + len(piece) / per_s
            if not await link.wait_until(self._free_at, self):
                await emit(data[start:])  # removed: the rest goes on unthrottled
                return
            await emit(piece)
