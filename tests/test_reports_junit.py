"""DIR/junit.xml against the JUnit XML schema's rules (Jenkins junit-10.xsd).

The schema check is written here with ElementTree (no XSD validator is installed, and
the rules that matter are few): only the schema's elements in their places, only its
attributes, required attributes present, numbers where numbers go, and the counts on
testsuite and testsuites equal to what the testcases hold.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from report_fixtures import SECRET, build_run
from reports.junit import write_junit

# element: (allowed attributes, required attributes, allowed children)
SCHEMA = {
    "testsuites": ({"name", "time", "tests", "failures", "disabled", "errors"}, set(), {"testsuite"}),
    "testsuite": ({"name", "tests", "failures", "errors", "time", "disabled", "skipped", "timestamp", "hostname",
                   "id", "package", "file", "log", "url", "version"}, {"name", "tests"},
                  {"properties", "testcase", "system-out", "system-err"}),
    "properties": (set(), set(), {"property"}),
    "property": ({"name", "value"}, {"name", "value"}, set()),
    "testcase": ({"name", "assertions", "time", "classname", "status", "class", "file", "line"}, {"name"},
                 {"skipped", "error", "failure", "system-out", "system-err"}),
    "failure": ({"message", "type"}, set(), set()),
    "error": ({"message", "type"}, set(), set()),
    "skipped": ({"message"}, set(), set()),
    "system-out": (set(), set(), set()),
    "system-err": (set(), set(), set()),
}
NUMBER = re.compile(r"^\d+(\.\d+)?$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


def check_schema(root: ET.Element) -> None:
    assert root.tag == "testsuites"
    for el in root.iter():
        assert el.tag in SCHEMA, f"element <{el.tag}> is not in the schema"
        allowed, required, children = SCHEMA[el.tag]
        assert set(el.attrib) <= allowed, f"<{el.tag}> has {set(el.attrib) - allowed}"
        assert required <= set(el.attrib), f"<{el.tag}> lacks {required - set(el.attrib)}"
        for child in el:
            assert child.tag in children, f"<{child.tag}> inside <{el.tag}>"
        for attr in ("tests", "failures", "errors", "skipped", "disabled", "time"):
            if attr in el.attrib:
                assert NUMBER.match(el.attrib[attr]), f"{el.tag}@{attr}={el.attrib[attr]!r}"
        if "timestamp" in el.attrib:
            assert TIMESTAMP.match(el.attrib["timestamp"])
    for suite in root.iter("testsuite"):
        kids = [c.tag for c in suite]
        if "properties" in kids:
            assert kids.index("properties") == 0 and len(suite.find("properties")) >= 1
        cases = suite.findall("testcase")
        for case in cases:
            assert len(case.findall("skipped")) <= 1
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures", 0)) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("errors", 0)) == sum(1 for c in cases if c.find("error") is not None)
        assert int(suite.get("skipped", 0)) == sum(1 for c in cases if c.find("skipped") is not None)
    suites = root.findall("testsuite")
    for attr in ("tests", "failures", "errors"):
        assert int(root.get(attr)) == sum(int(s.get(attr, 0)) for s in suites)


def test_one_testcase_per_check_and_the_schema_holds(tmp_path):
    run = build_run(tmp_path / "run", learners=3, duration_s=30, failing=True)
    path = write_junit(run.path)
    assert path == run.path / "junit.xml"
    root = ET.parse(path).getroot()
    check_schema(root)
    suite = root.find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == [c["name"] for c in run.checks]
    for check in run.checks:
        case = cases[check["name"]]
        assert case.get("classname") == f"chaosloco.{run.result['scenario']}"
        failure, skipped = case.find("failure"), case.find("skipped")
        assert (failure is not None) == (check["verdict"] == "fail")
        assert (skipped is not None) == (check["verdict"] == "unknown")
        assert str(check["expected"]) in case.find("system-out").text
    failure = cases["max_stall_s"].find("failure")
    assert failure.get("message") == "expected <= 0.1, got 0.5"
    assert "detail: longest stretch" in failure.text
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("5", "1", "1", "0")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["seed"] == "7" and props["verdict"] == "fail" and props["trainer"] == "decoupled"
    assert suite.get("timestamp") == "2026-11-22T08:00:00" and float(suite.get("time")) == 30
    assert SECRET not in path.read_text()


def test_an_interrupted_run_is_an_error_not_green(tmp_path):
    run = build_run(tmp_path / "run", learners=3, duration_s=20, with_unknown=False)
    result = json.loads((run.path / "result.json").read_text())
    result["status"] = "interrupted"
    (run.path / "result.json").write_text(json.dumps(result))
    root = ET.parse(write_junit(run.path)).getroot()
    check_schema(root)
    error = root.find("testsuite/testcase[@name='run']/error")
    assert error is not None and error.get("message") == "run interrupted"
    assert root.get("errors") == "1"


@pytest.mark.parametrize("bad", ["tests=\"3\"", "<bogus/>"])
def test_the_schema_check_catches_inconsistency(bad):
    # The checker itself must reject a wrong count and an unknown element.
    if bad.startswith("tests"):
        xml = f'<testsuites tests="1"><testsuite name="s" {bad}><testcase name="a"/></testsuite></testsuites>'
    else:
        xml = f'<testsuites tests="1"><testsuite name="s" tests="1"><testcase name="a">{bad}</testcase></testsuite></testsuites>'
    with pytest.raises(AssertionError):
        check_schema(ET.fromstring(xml))
