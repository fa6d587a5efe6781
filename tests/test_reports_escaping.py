"""Text from scenarios, logs and names is shown as text: in the HTML report, the
comparison page and the JUnit file, a name like <script>alert(1)</script> stays inert."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from report_fixtures import build_run, parse_html
from reports.compare import write_comparison
from reports.html import write_report
from reports.junit import write_junit

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = "\"><img src=x onerror=alert(1)>'"


def _assert_inert(text: str) -> None:
    lowered = text.lower()
    assert "<script" not in lowered and "<img" not in lowered
    dom = parse_html(text)
    for node in dom.iter():
        assert node.tag not in ("script", "img"), node.tag
        assert not any(a.startswith("on") for a in node.attrs), (node.tag, node.attrs)


@pytest.mark.parametrize("hostile", [SCRIPT, ATTRIBUTE, SCRIPT + "\x01&amp;"], ids=["script", "attribute", "control"])
def test_hostile_names_are_escaped_in_the_report(tmp_path, hostile):
    run = build_run(tmp_path / "run", learners=4, duration_s=30, hostile=hostile)
    text = write_report(run.path).read_text()
    _assert_inert(text)
    assert "\x01" not in text  # control characters are not valid HTML: shown as U+FFFD
    dom = parse_html(text)
    hostile = hostile.replace("\x01", "\ufffd")
    # shown as text where it was used: scenario title, check row, fault, metadata, link row
    assert dom.find("header", cls="banner").find("h1").text() == hostile
    assert dom.find("tr", cls="check", data_check=hostile).find("td", cls="name").text() == hostile
    assert hostile in dom.find("table", cls="faults").text()
    assert dom.find("pre", data_meta="scenario_text").text() == run.scenario_text.replace("\x01", "\ufffd")
    assert dom.find("dd", data_meta="host").text() == hostile
    assert dom.find("g", cls="fault-window", data_fault=hostile)
    assert dom.find("g", cls="bar-group", data_row=hostile)
    if hostile == SCRIPT:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_hostile_names_are_escaped_in_the_comparison(tmp_path):
    runs = [build_run(tmp_path / name, learners=4, duration_s=20, hostile=SCRIPT, trainer=mode).path
            for name, mode in (("a", SCRIPT), ("b", "ddp"))]
    text = write_comparison(runs, tmp_path / "cmp.html").read_text()
    _assert_inert(text)
    assert parse_html(text).find("tr", cls="run", data_run=SCRIPT)


@pytest.mark.parametrize("hostile", [SCRIPT, SCRIPT + "\x01\x1b"], ids=["script", "control"])
def test_hostile_names_are_escaped_in_junit(tmp_path, hostile):
    run = build_run(tmp_path / "run", learners=4, duration_s=20, hostile=hostile)
    path = write_junit(run.path)
    raw = path.read_text()
    assert "<script" not in raw
    root = ET.parse(path).getroot()  # parses: control characters were replaced
    expected_name = hostile.replace("\x01", "\ufffd").replace("\x1b", "\ufffd")
    case = next(c for c in root.iter("testcase") if c.get("name") == expected_name)
    assert case.find("failure").get("message") == f"expected {expected_name}, got {expected_name}"
    assert root.find("testsuite").get("name") == f"chaosloco.{expected_name}"
