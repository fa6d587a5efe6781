"""noop: passes data through unchanged (Toxiproxy has it too; handy in tests)."""
from __future__ import annotations

from faults.toxiproxy.toxics import register
from faults.toxiproxy.toxics.base import Toxic


@register
class Noop(Toxic):
    type_name = "noop"
    defaults = {}
