"""The harness journal: every harness action as JSON lines (docs/CONTRACTS.md).

Faults are operations recorded in the same history as the workload (Jepsen's idea):
the journal sits beside the trainer's ``events.jsonl`` and the two together are the
single source for measurements, checks and reports.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from trainers.events import iter_events


class Journal:
    """Append-only, flushed per record so a crashed harness still leaves a usable journal."""

    def __init__(self, path: str | os.PathLike[str], *, clock=time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._clock = clock

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        entry = {"t": self._clock(), "kind": kind, **fields}
        line = (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, line)
        return entry

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return list(iter_events(path))
