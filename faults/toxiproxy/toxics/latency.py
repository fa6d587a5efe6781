"""latency: delay every chunk by ``latency`` ms, plus or minus up to ``jitter`` ms.

The delay counts from when the chunk was read off the source socket, so a stream is
pipelined (throughput is kept, each byte is late by the delay) rather than paying the
delay once per chunk in sequence; this is what Toxiproxy's latency toxic does.
"""
from __future__ import annotations

from faults.toxiproxy.toxics import register
from faults.toxiproxy.toxics.base import Emit, LinkControl, Toxic


@register
class Latency(Toxic):
    type_name = "latency"
    defaults = {"latency": 0, "jitter": 0}
    latency: int
    jitter: int

    def delay_s(self) -> float:
        jitter = self.rng.randint(-self.jitter, self.jitter) if self.jitter else 0
        return max(0, self.latency + jitter) / 1000.0

    async def pipe(self, data: bytes, emit: Emit, link: LinkControl) -> None:
        # Interrupted (toxic removed): the chunk goes on at once; nothing is dropped.
        await link.wait_until(link.arrived + self.delay_s(), self)
        await emit(data)
