"""timeout: let nothing through; close the connection after ``timeout`` ms (0 = never).

With ``timeout`` 0 this is a blackhole: the connection stays open and every byte sent in
this direction is dropped until the toxic is removed, as in Toxiproxy. Dropping is the
point of this toxic; bytes that arrive after its removal flow normally.
"""
from __future__ import annotations

from faults.toxiproxy.toxics import register
from faults.toxiproxy.toxics.base import Emit, LinkControl, Toxic


@register
class Timeout(Toxic):
    type_name = "timeout"
    defaults = {"timeout": 0}
    timeout: int

    async def pipe(self, data: bytes, emit: Emit, link: LinkControl) -> None:
        return  # dropped on purpose

    async def watch(self, link: LinkControl) -> None:
        if self.timeout > 0 and await link.wait_until(link.now() + self.timeout / 1000.0, self):
            link.close()
