"""The trainer's event log: JSON lines appended by every trainer process.

Each line is written with one os.write on an O_APPEND descriptor, so lines from the
synchronizer and several learners (also in containers sharing a bind mount) never
interleave. A process killed mid-run leaves at worst a torn last line, which the reader
skips. The log is the single source for checks and reports (docs/CONTRACTS.md).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator


class JsonLines:
    """An append-only JSON-lines file: one O_APPEND descriptor, one ``os.write`` per
    record (so concurrent writers never interleave), nothing buffered in the process
    (so a crash loses nothing written). The trainer's event log and the harness
    journal are both this."""

    def __init__(self, path: str | os.PathLike[str], *, default: Callable[[Any], Any] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._default = default or _jsonable

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        line = (json.dumps(record, separators=(",", ":"), default=self._default) + "\n").encode()
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, line)
        return record

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventLog(JsonLines):
    """Appends events for one source (``syncer`` or ``learner-3``) to ``path``."""

    def __init__(self, path: str | os.PathLike[str], src: str) -> None:
        super().__init__(path)
        self.src = src

    def emit(self, ev: str, **fields: Any) -> dict[str, Any]:
        return self.append({"t": time.time(), "src": self.src, "ev": ev, **fields})


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def iter_events(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yields the events of a log in file order, skipping a torn (partial) line."""
    p = Path(path)
    if not p.exists():
        return
    with p.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break  # torn last line of a killed writer
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return list(iter_events(path))
