"""slicer: cut each chunk into pieces of ``average_size`` +- ``size_variation`` bytes,
``delay`` microseconds apart (Toxiproxy's slicer; sizes drawn from the seeded RNG).

``average_size`` 0 passes chunks through whole.
"""
from __future__ import annotations

from faults.toxiproxy.toxics import register
from faults.toxiproxy.toxics.base import Emit, LinkControl, Toxic, ToxicError


@register
class Slicer(Toxic):
    type_name = "slicer"
    defaults = {"average_size": 0, "size_variation": 0, "delay": 0}
    average_size: int
    size_variation: int
    delay: int

    @classmethod
    def check(cls, attributes) -> None:
        if attributes["size_variation"] > attributes["average_size"] > 0:
            raise ToxicError("slicer: size_variation must not exceed average_size")

    async def pipe(self, data: bytes, emit: Emit, link: LinkControl) -> None:
        if self.average_size <= 0:
            await emit(data)
            return
        start = 0
        while start < len(data):
            size = self.average_size + self.rng.randint(-self.size_variation, self.size_variation)
            piece = data[start:start + max(1, size)]
            start += len(piece)
            await emit(piece)
            if start < len(data) and self.delay and \
                    not await link.wait_until(link.now() + self.delay / 1e6, self):
                await emit(data[start:])  # removed: the rest goes on whole
                return
