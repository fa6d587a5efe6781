"""The harness journal: every harness action as JSON lines (docs/CONTRACTS.md).

Faults are operations recorded in the same history as the workload (Jepsen's idea):
the journal sits beside the trainer's ``events.jsonl`` and the two together are the
single source for measurements, checks and reports.
"""
from __future__ import annotations

import os
import time
from typing import Any

from trainers.events import JsonLines, iter_events


class Journal(JsonLines):
    """Append-only, written per record so a crashed harness still leaves a usable journal."""

    def __init__(self, path: str | os.PathLike[str], *, clock=time.time) -> None:
        super().__init__(path, default=str)
        self._clock = clock

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self.append({"t": self._clock(), "kind": kind, **fields})


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return list(iter_events(path))
