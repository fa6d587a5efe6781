"""The fault protocol: setup -> inject -> heal, one fault per module.

Heal is idempotent and must work after a partial inject (it runs on every exit path,
Ctrl-C included). A fault acts only through the backend and the link adapter, and
records what it did in the journal so measurements see it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Protocol

from faults.link_adapter import ToxiproxyAdapter
from harness.backend import Backend
from harness.journal import Journal


@dataclasses.dataclass
class FaultContext:
    backend: Backend
    links: ToxiproxyAdapter
    journal: Journal
    fault_id: str
    target: str  # node name: "learner-2" or "syncer"
    params: Mapping[str, Any]


class Fault(Protocol):
    kind: ClassVar[str]

    def inject(self, ctx: FaultContext) -> None: ...

    def heal(self, ctx: FaultContext) -> None: ...
