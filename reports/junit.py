"""``DIR/junit.xml``: one testcase per check, for CI dashboards.

The shape follows the JUnit XML schema CI servers read (Jenkins' junit-10.xsd, which
GitLab, GitHub test reporters and Buildkite accept): ``testsuites`` > one ``testsuite``
(tests / failures / errors / skipped counts, time, timestamp, hostname, properties) >
``testcase`` per check. A FAIL check carries ``<failure message=...>``, an UNKNOWN one
``<skipped message=...>``; every testcase has the expected and actual values in
``system-out``. A run that did not complete (interrupted, infrastructure failed) and
whose checks do not already judge that (``run_completed``) adds a ``run`` testcase with
an ``<error>``, so a dashboard never shows a broken run as green.

Written with xml.etree.ElementTree, which escapes markup characters; characters XML 1.0
cannot hold at all (control bytes a log line may carry) are replaced first, since
ElementTree would otherwise write a file no parser accepts.
"""
from __future__ import annotations

import datetime as _dt
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from reports import fmt
from reports.page import write_atomically
from reports.rundir import RunFolder, check_verdict, load_run, run_verdict, trainer_name

JUNIT_FILE = "junit.xml"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def clean(value: Any) -> str:
    """Text XML 1.0 can carry: control characters become U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(value))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: clean(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = clean(text)
    return el


def _timestamp(started: Any) -> str | None:
    """junit-10.xsd wants a dateTime without a zone: 2026-11-22T08:00:00 (UTC here)."""
    if not isinstance(started, str):
        return None
    try:
        when = _dt.datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def build(run: RunFolder) -> ET.Element:
    result, meta = run.result, run.run
    scenario = str(result.get("scenario") or meta.get("scenario_path") or run.path.name)
    classname = f"chaosloco.{scenario}"
    duration = fmt.number(result.get("duration_s")) or 0.0
    root = ET.Element("testsuites", {"name": "chaosloco"})
    suite = _sub(root, "testsuite", name=classname, timestamp=_timestamp(meta.get("started_at")),
                 hostname=meta.get("host") if meta.get("host") else None, id="0", package="chaosloco")
    props = _sub(suite, "properties")
    for key, value in (("run_id", meta.get("run_id")), ("scenario_path", meta.get("scenario_path")),
                       ("seed", result.get("seed", meta.get("seed"))), ("backend", result.get("backend", meta.get("backend"))),
                       ("trainer", trainer_name(result.get("trainer", meta.get("trainer")))),
                       ("status", result.get("status")), ("verdict", run_verdict(result)),
                       ("goodput", result.get("goodput")), ("availability_bound", result.get("availability_bound")),
                       ("goodput_efficiency", result.get("goodput_efficiency")),
                       ("max_global_stall_seconds", result.get("max_global_stall_seconds")),
                       ("wire_bytes_per_useful_token", result.get("wire_bytes_per_useful_token")),
                       ("quality_gap", result.get("quality_gap")), ("run_dir", str(run.path))):
        if value is not None:
            _sub(props, "property", name=key, value=value)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for check in run.checks:
        verdict = check_verdict(check)
        expected, actual = fmt.plain(check.get("expected"), 1000), fmt.plain(check.get("actual"), 1000)
        detail = f"\ndetail: {fmt.plain(check.get('detail'), 2000)}" if check.get("detail") else ""
        case = _sub(suite, "testcase", name=check.get("name"), classname=classname, time="0")
        counts["tests"] += 1
        if verdict == "fail":
            _sub(case, "failure", f"expected: {expected}\nactual: {actual}{detail}",
                 message=f"expected {expected}, got {actual}", type="CheckFailed")
            counts["failures"] += 1
        elif verdict == "unknown":
            _sub(case, "skipped", message=f"unknown: expected {expected}, got {actual}")
            counts["skipped"] += 1
        _sub(case, "system-out", f"expected: {expected}\nactual: {actual}{detail}")
    status = str(result.get("status", "completed"))
    judged = any(str(c.get("name")) == "run_completed" for c in run.checks)  # harness already made it a check
    if status != "completed" and not judged:
        reason = next((r.get("reason") for r in run.journal if r.get("kind") == "run_end"), None)
        case = _sub(suite, "testcase", name="run", classname=classname, time=f"{duration:.3f}")
        _sub(case, "error", f"run {status}: {reason}", message=f"run {status}", type=status)
        counts["tests"] += 1
        counts["errors"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
        if key != "skipped":  # junit-10.xsd has no skipped count on <testsuites>
            root.set(key, str(value))
    for el in (root, suite):
        el.set("time", f"{duration:.3f}")
    if not len(props):
        suite.remove(props)  # the schema allows no empty <properties>
    return root


def render(run: RunFolder) -> str:
    root = build(run)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(run_dir: Path) -> Path:
    """Writes ``run_dir/junit.xml``; ConfigError for a missing or malformed run folder."""
    run = load_run(run_dir)
    return write_atomically(Path(run_dir) / JUNIT_FILE, render(run))
