"""Reports from a result.json the harness itself wrote: the run folder is judged by
harness.result (measurements and checks) and rendered through harness.result's
write_reports, the call the run loop makes at the end of every run. The report must
mirror the harness's checks and figures, and the curves recomputed from the logs must
end where the harness's figures say."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from harness.result import build_result, write_reports, write_result
from harness.scenario import parse_scenario
from report_fixtures import build_run, parse_html
from reports import series
from reports.rundir import load_run
from test_reports_junit import check_schema


@pytest.fixture
def judged(tmp_path):
    built = build_run(tmp_path / "run", learners=4, duration_s=60)
    scenario = parse_scenario(built.scenario_text)
    write_result(built.path, build_result(built.path, scenario, backend="local", seed=built.run["seed"],
                                          status="completed"))
    warnings: list[str] = []
    write_reports(built.path, warnings.append)
    assert warnings == []
    return built, json.loads((built.path / "result.json").read_text())


def test_report_mirrors_the_harness_checks_and_figures(judged):
    built, result = judged
    dom = parse_html((built.path / "report.html").read_text())
    assert dom.find("header", cls="banner").attrs["data-verdict"] == result["verdict"]
    rows = {r.attrs["data-check"]: r for r in dom.find("table", cls="checks").find_all("tr", cls="check")}
    assert sorted(rows) == sorted(c["name"] for c in result["checks"])
    for check in result["checks"]:
        assert rows[check["name"]].find(cls="pill").text() == check["verdict"].upper()
    value = dom.find("div", cls="figure", data_figure="goodput").find(cls="value").text()
    assert value == f"{result['goodput'] * 100:.1f}%"
    lanes = dom.find("svg", cls="timeline").find_all("g", cls="lane-learner")
    assert [g.attrs["data-lane"] for g in lanes] == built.learners


def test_recomputed_curves_agree_with_the_harness_figures(judged):
    built, result = judged
    run = load_run(built.path)
    span = series.run_span(run.journal, run.events)
    assert span.duration == pytest.approx(result["duration_s"])
    useful = series.useful_tokens(run.events, span)
    assert useful[-1][1] == pytest.approx(result["useful_tokens"])
    rate = series.capacity_rate(run.result, run.events)
    assert rate * span.duration == pytest.approx(result["capacity_tokens"])
    assert series.bytes_per_link({}, run.events) == {
        k: (v["in"], v["out"]) for k, v in result["bytes_per_link"].items()}


def test_junit_mirrors_the_harness_checks(judged):
    built, result = judged
    root = ET.parse(built.path / "junit.xml").getroot()
    check_schema(root)
    cases = root.findall("testsuite/testcase")
    assert [c.get("name") for c in cases] == [c["name"] for c in result["checks"]]
    assert int(root.get("failures")) == sum(1 for c in result["checks"] if c["verdict"] == "fail")
