"""result.json from a finished run folder: measurements, checks, verdict, faults.

Everything here is computed from ``journal.jsonl`` and ``events.jsonl`` alone
(harness.measure, harness.checks), so re-judging an old run folder gives the same
answer. The layout of result.json is docs/CONTRACTS.md's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.journal import read_journal
from harness.model import Scenario
from trainers.events import read_events


def fault_records(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each injected fault with its planned offset and the offsets it really happened at."""
    ready = next((float(r["t"]) for r in journal if r.get("kind") == "ready"), None)

    def offset(t: float | None) -> float | None:
        return None if t is None or ready is None else round(float(t) - ready, 3)

    out: dict[str, dict[str, Any]] = {}
    for r in journal:
        if r.get("kind") == "fault_inject":
            out[r["fault_id"]] = {"fault_id": r["fault_id"], "fault": r["fault"], "target": r["target"],
                                  "planned_s": r.get("planned_s"), "injected_s": offset(r["t"]),
                                  "healed_s": None, "params": r.get("params", {})}
        elif r.get("kind") == "fault_heal" and r.get("fault_id") in out:
            out[r["fault_id"]]["healed_s"] = offset(r["t"])
    return list(out.values())


def baseline_eval_loss(baseline_dir: Path | None) -> float | None:
    """The fault-free run's final eval loss, for the quality gap."""
    if baseline_dir is None:
        return None
    result = Path(baseline_dir) / "result.json"
    if result.exists():
        value = json.loads(result.read_text()).get("eval_loss_final")
        if value is not None:
            return float(value)
    evals = [e for e in read_events(Path(baseline_dir) / "events.jsonl") if e.get("ev") == "eval"]
    return float(evals[-1]["loss"]) if evals else None


def build_result(run_dir: Path, scenario: Scenario, *, backend: str, seed: int, status: str,
                 baseline_dir: Path | None = None) -> dict[str, Any]:
    from harness import checks as checks_mod
    from harness.measure import measure

    events = read_events(run_dir / "events.jsonl")
    journal = read_journal(run_dir / "journal.jsonl")
    trainer = scenario.trainer
    m = measure(events, journal, learners=trainer.learners, quorum=trainer.effective_quorum,
                cpu_shares=scenario.cpu_shares, baseline_eval_loss=baseline_eval_loss(baseline_dir))
    results = checks_mod.run_checks(scenario.checks, m, events, journal, status=status)
    verdict = checks_mod.overall(results)
    return {
        "scenario": scenario.name, "backend": backend, "trainer": trainer.mode.value, "seed": seed,
        **m.as_result_fields(), "eval_loss_start": m.eval_loss_start,
        "status": status, "verdict": verdict.value,
        "checks": [c.as_dict() for c in results],
        "faults": fault_records(journal), "notes": list(m.notes),
    }


def write_result(run_dir: Path, result: dict[str, Any]) -> Path:
    path = run_dir / "result.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def write_reports(run_dir: Path, warn, *, baseline_dir: Path | None = None) -> None:
    """report.html and junit.xml through the reports package, where it is installed."""
    for module, func, what in (("reports.html", "write_report", "report.html"),
                               ("reports.junit", "write_junit", "junit.xml")):
        try:
            mod = __import__(module, fromlist=[func])
            writer = getattr(mod, func)
        except (ImportError, AttributeError):
            warn(f"warning: {module}.{func} not available; {what} not written")
            continue
        try:
            if func == "write_report" and baseline_dir is not None:
                writer(run_dir, baseline_dir=baseline_dir)
            else:
                writer(run_dir)
        except Exception as e:  # a report must not turn a judged run into a crash
            warn(f"warning: {what} not written: {e}")
