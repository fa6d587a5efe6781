"""Incremental readers of the run's JSON-lines logs (events.jsonl, journal.jsonl).

The run waits for ``joined`` events and the live view follows progress while trainer
processes keep appending, so each reader remembers its byte offset and returns only
new complete lines; a torn last line (a writer killed mid-write, or simply not done
yet) is left for the next read.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class JsonlTail:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._offset = 0

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        out = []
        for raw in data[: end + 1].splitlines():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return out
