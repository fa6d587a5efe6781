"""Reads a run folder (docs/CONTRACTS.md) for the reports: run.json, result.json,
journal.jsonl and events.jsonl, nothing else.

The reports are rendered from the run folder alone, so any run can be re-rendered later.
A folder that is missing or holds a malformed file is the user's mistake (they named the
wrong folder): a ConfigError that names the file. ``DIR/secret`` is never opened.

events.jsonl may be absent (a run whose infrastructure failed before any trainer
started still deserves a report); the other three are required. Torn or non-JSON lines
of the two logs are skipped, as every reader of those logs does.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from trainers.events import iter_events

RUN_FILE = "run.json"
RESULT_FILE = "result.json"
JOURNAL_FILE = "journal.jsonl"
EVENTS_FILE = "events.jsonl"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """What a report needs from one run, as read from disk."""

    path: Path
    run: dict[str, Any]
    result: dict[str, Any]
    journal: list[dict[str, Any]]
    events: list[dict[str, Any]]

    @property
    def label(self) -> str:
        """A short name for the run in comparisons: trainer and folder name."""
        return f"{trainer_name(self.result.get('trainer', self.run.get('trainer')))} · {self.path.name}"

    @property
    def checks(self) -> list[dict[str, Any]]:
        return self.result.get("checks") or []


def trainer_name(trainer: Any) -> str:
    """The trainer field is a mode name in the contract; tolerate a dict with a mode."""
    if isinstance(trainer, dict):
        return str(trainer.get("mode", trainer.get("name", "trainer")))
    return "unknown" if trainer is None else str(trainer)


def _read_json_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError("missing: not a run folder, or the run did not finish writing it", file=str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"malformed JSON: {e}", file=str(path)) from e
    if not isinstance(data, dict):
        raise ConfigError("must hold a JSON object", file=str(path), value=type(data).__name__)
    return data


def _read_lines(path: Path, *, required: bool) -> list[dict[str, Any]]:
    if not path.is_file():
        if required:
            raise ConfigError("missing: not a run folder", file=str(path))
        return []
    try:
        records = [r for r in iter_events(path) if isinstance(r, dict)]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"unreadable: {e}", file=str(path)) from e
    # Every record carries a float time; one without is not from our writers.
    good = [r for r in records if isinstance(r.get("t"), (int, float)) and not isinstance(r.get("t"), bool)]
    if records and not good:
        raise ConfigError("no record has a numeric 't'", file=str(path))
    good.sort(key=lambda r: r["t"])  # several processes append; order by time
    return good


def _check_result(result: dict[str, Any], path: Path) -> None:
    checks = result.get("checks", [])
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise ConfigError("must be a list of objects", file=str(path), key="checks", value=type(checks).__name__)
    for i, check in enumerate(checks):
        if "name" not in check:
            raise ConfigError("check has no name", file=str(path), key=f"checks[{i}]")
    for key in ("faults", "rejoin_seconds"):
        value = result.get(key, [])
        if value is not None and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            raise ConfigError("must be a list of objects", file=str(path), key=key, value=type(value).__name__)
    links = result.get("bytes_per_link", {})
    if links is not None and not isinstance(links, dict):
        raise ConfigError("must be an object", file=str(path), key="bytes_per_link", value=type(links).__name__)


def load_run(run_dir: str | Path) -> RunFolder:
    """Reads a run folder; raises ConfigError naming the first missing or malformed file."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError("not a directory (expected a run folder)", file=str(path))
    run = _read_json_object(path / RUN_FILE)
    result_path = path / RESULT_FILE
    result = _read_json_object(result_path)
    _check_result(result, result_path)
    journal = _read_lines(path / JOURNAL_FILE, required=True)
    events = _read_lines(path / EVENTS_FILE, required=False)
    return RunFolder(path=path, run=run, result=result, journal=journal, events=events)


VERDICTS = ("pass", "fail", "unknown")


def check_verdict(check: dict[str, Any]) -> str:
    """pass / fail / unknown for one check: its ``verdict``, else its ``passed`` flag."""
    verdict = str(check.get("verdict", "")).lower()
    if verdict in VERDICTS:
        return verdict
    passed = check.get("passed")
    return "pass" if passed is True else "fail" if passed is False else "unknown"


def run_verdict(result: dict[str, Any]) -> str:
    """result.json's verdict; if absent, the checks combined (fail beats unknown beats pass)."""
    verdict = str(result.get("verdict", "")).lower()
    if verdict in VERDICTS:
        return verdict
    found = {check_verdict(c) for c in result.get("checks") or []}
    return "fail" if "fail" in found else "unknown" if "unknown" in found or not found else "pass"
