"""The run report's structure against a run folder with known content (report_fixtures)."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from report_fixtures import SECRET, build_run, parse_html
from reports import svg
from reports.html import write_report
from reports.junit import write_junit


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = build_run(tmp_path_factory.mktemp("run") / "run", learners=4, duration_s=60, failing=True)
    path = write_report(run.path)
    return run, path.read_text(encoding="utf-8"), parse_html(path.read_text(encoding="utf-8"))


def test_written_into_the_run_folder(built):
    run, _, _ = built
    assert (run.path / "report.html").is_file()
    assert not list(run.path.glob(".report.html.*.tmp")), "atomic write left its temporary file"


def test_banner_shows_the_verdict_and_names_the_failed_check(built):
    run, _, dom = built
    banner = dom.find("header", cls="banner")
    assert banner.attrs["data-verdict"] == run.result["verdict"] == "fail"
    assert "verdict-fail" in banner.classes
    assert banner.find(cls="verdict").text() == "FAIL"
    assert run.result["scenario"] in banner.find("h1").text()
    r = run.result
    assert banner.find("p", cls="lead").text() == (
        f"Goodput {r['goodput'] * 100:.1f}% of capacity; the faults allowed {r['availability_bound'] * 100:.1f}%, "
        f"so the trainer reached {r['goodput_efficiency'] * 100:.1f}% of what was possible; longest stall 0.50 s.")
    why = banner.text()
    assert "1 of 5 checks failed" in why and "max_stall_s" in why
    # the banner is the first thing in the page
    main = dom.find("main")
    first = next(c for c in main.children if not isinstance(c, str))
    assert first is banner


def test_checks_table_has_one_row_per_check_with_expected_actual_verdict(built):
    run, _, dom = built
    rows = dom.find("table", cls="checks").find_all("tr", cls="check")
    assert sorted(r.attrs["data-check"] for r in rows) == sorted(c["name"] for c in run.checks)
    assert rows[0].attrs["data-check"] == "max_stall_s", "failed checks come first"
    assert rows[0].find("td", cls="detail").text() == run.checks[2]["detail"] != ""
    by_name = {r.attrs["data-check"]: r for r in rows}
    for check in run.checks:
        row = by_name[check["name"]]
        assert row.find(cls="pill").text() == check["verdict"].upper()
        assert f"verdict-{check['verdict']}" in row.classes
        expected, actual = row.find("td", cls="expected").text(), row.find("td", cls="actual").text()
        assert expected == check["expected"]
        if isinstance(check["actual"], (int, float)):
            assert float(actual) == pytest.approx(check["actual"], rel=1e-3)
        else:
            assert actual == check["actual"]


def _figure(dom, key: str) -> str:
    return dom.find("div", cls="figure", data_figure=key).find(cls="value").text()


def test_headline_figures_match_result_json(built):
    run, _, dom = built
    r = run.result
    assert _figure(dom, "goodput") == f"{r['goodput'] * 100:.1f}%"
    assert _figure(dom, "availability_bound") == f"{r['availability_bound'] * 100:.1f}%"
    assert _figure(dom, "goodput_efficiency") == f"{r['goodput_efficiency'] * 100:.1f}%"
    assert _figure(dom, "rejoin") == f"{r['rejoin_seconds'][0]['to_first_merge_s']:.2f} s"
    assert _figure(dom, "max_global_stall_seconds") == f"{r['max_global_stall_seconds']:.2f} s"
    assert float(_figure(dom, "wire_bytes_per_useful_token").split()[0]) == pytest.approx(
        r["wire_bytes_per_useful_token"], rel=1e-3)
    assert _figure(dom, "quality_gap") == "—"  # null in result.json: no baseline
    # the failed stall check marks its figure
    assert "bad" in dom.find("div", cls="figure", data_figure="max_global_stall_seconds").classes
    assert "bad" not in dom.find("div", cls="figure", data_figure="goodput").classes
    # the headline comes right after the banner and the section links, before the timeline
    order = [n for n in dom.iter() if n.attrs.get("id") in ("verdict", "figures", "timeline", "checks")]
    assert [n.attrs["id"] for n in order] == ["verdict", "figures", "timeline", "checks"]


def _x(node) -> float:
    return float(node.attrs["x"])


def test_timeline_has_a_lane_per_learner_and_a_shaded_window_per_fault(built):
    run, _, dom = built
    timeline = dom.find("svg", cls="timeline")
    lanes = timeline.find_all("g", cls="lane-learner")
    assert [g.attrs["data-lane"] for g in lanes] == run.learners
    shades = timeline.find_all("rect", cls="fault-shade")
    assert sorted(s.attrs["data-fault"] for s in shades) == sorted(run.fault_ids)
    lane = {g.attrs["data-lane"]: g for g in lanes}
    assert lane["learner-1"].find_all("rect", cls="state-down") and lane["learner-1"].find_all("rect", cls="state-rejoining")
    assert lane["learner-2"].find_all("rect", cls="state-paused")
    assert lane["learner-0"].find_all("rect", cls="state-partitioned")
    assert not lane["learner-3"].find_all("rect", cls="state-down")
    # lanes and fault shading share one time axis: the kill's window starts where learner-1 goes down
    kill = next(s for s in shades if s.attrs["data-fault"].startswith("f001"))
    down = lane["learner-1"].find("rect", cls="state-down")
    assert abs(_x(kill) - _x(down)) < 1.0
    assert _x(kill) == pytest.approx(svg.LEFT + svg.PLOT_W * 0.2, abs=1.0)  # at 20% of the run
    # rejoining lasts from the restart to the first step (2 s of a 60 s run)
    rejoin = lane["learner-1"].find("rect", cls="state-rejoining")
    assert float(rejoin.attrs["width"]) == pytest.approx(svg.PLOT_W * 2.0 / 60, abs=1.0)
    # the time series charts shade the same windows at the same x
    for chart in dom.find_all("svg", cls="line-chart"):
        xs = {s.attrs["data-fault"]: _x(s) for s in chart.find_all("rect", cls="fault-shade")}
        assert xs[kill.attrs["data-fault"]] == pytest.approx(_x(kill), abs=0.1)


def test_rejoin_table_lists_each_restart(built):
    run, _, dom = built
    rows = dom.find("table", cls="rejoins").find_all("tr", cls="rejoin")
    assert len(rows) == len(run.result["rejoin_seconds"]) == 1
    cells = [td.text() for td in rows[0].find_all("td")]
    expected = run.result["rejoin_seconds"][0]
    assert cells == ["learner-1", "18s", f"{expected['to_first_step_s']:.2f} s", f"{expected['to_first_merge_s']:.2f} s"]


def test_reconnect_table_lists_each_cut_link_with_its_heal_time(built):
    run, _, dom = built
    rows = dom.find("table", cls="reconnects").find_all("tr", cls="reconnect")
    assert len(rows) == len(run.result["reconnect_seconds"]) == 1
    cells = [td.text() for td in rows[0].find_all("td")]
    assert cells == ["learner-0", "f003-link_down-learner-0", "42s", "1.25 s"]  # healed at 0.7 of 60 s


def test_every_chart_is_drawn_with_data(built):
    run, _, dom = built
    charts = dom.find_all("svg", cls="line-chart")
    labels = {c.attrs["aria-label"] for c in charts}
    assert {"Cumulative tokens over time", "Rolling goodput", "Eval loss over time",
            "Fragment versions over time"} <= labels
    for chart in charts:
        paths = chart.find_all("path", cls="series")
        assert paths, chart.attrs["aria-label"]
        for p in paths:
            assert int(p.attrs["data-points"]) >= 2
            assert len(re.findall(r"[LHV]", p.attrs["d"])) >= 1
    versions = next(c for c in charts if c.attrs["aria-label"] == "Fragment versions over time")
    assert len(versions.find_all("path", cls="series")) == 4  # one line per fragment
    bars = dom.find("svg", cls="bar-chart").find_all("rect", cls="bar")
    assert len(bars) == 2 * len(run.result["bytes_per_link"])
    assert all(float(b.attrs["width"]) > 0 for b in bars)


def test_metadata_block_holds_scenario_text_and_seed(built):
    run, _, dom = built
    block = dom.find("section", id="replay")
    assert block.find("pre", data_meta="scenario_text").text() == run.scenario_text
    assert block.find("dd", data_meta="seed").text() == "7"
    assert block.find("dd", data_meta="replay").text() == f"chaosloco run {run.run['scenario_path']} --seed 7"
    for key in ("backend", "trainer", "host", "run id"):
        assert block.find("dd", data_meta=key).text() == str(run.run[key.replace(" ", "_")])
    assert "torch 2.15.0" in block.find("dd", data_meta="versions").text()


def test_self_contained_no_external_reference_and_no_secret(built):
    _, text, dom = built
    assert SECRET not in text
    lowered = text.lower()
    for bad in ("<script", "<link", "<iframe", "<img", "<object", "@import", "url("):
        assert bad not in lowered, bad
    for node in dom.iter():
        assert "src" not in node.attrs, node.tag
        href = node.attrs.get("href")
        assert href is None or href.startswith("#"), href
    # the only "http" is the SVG namespace, which is a name, not a fetch
    assert set(re.findall(r"https?://[^\"' )]+", text)) == {"http://www.w3.org/2000/svg"}
    csp = dom.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert "default-src 'none'" in csp


def test_baseline_eval_loss_is_drawn_beside_the_run(tmp_path):
    run = build_run(tmp_path / "run", learners=3, duration_s=30)
    base = build_run(tmp_path / "base", learners=3, duration_s=30, seed=1)
    dom = parse_html(write_report(run.path, baseline_dir=base.path).read_text())
    chart = next(c for c in dom.find_all("svg", cls="line-chart") if c.attrs["aria-label"] == "Eval loss over time")
    titles = [p.find("title").text() for p in chart.find_all("path", cls="series")]
    assert len(titles) == 2 and titles[1].startswith("baseline:")


def test_a_learner_that_never_rejoined_is_the_worst_rejoin():
    from reports.html import _rejoin_figure
    value, note = _rejoin_figure([{"learner": 0, "to_first_step_s": 1.0, "to_first_merge_s": 3.0},
                                  {"learner": 2, "to_first_step_s": 4.0, "to_first_merge_s": None}])
    assert value == "never" and note.startswith("learner-2 restarted") and "2 rejoins" in note
    assert _rejoin_figure([{"learner": 1, "to_first_step_s": 1.0, "to_first_merge_s": 3.0}])[0] == "3.00 s"
    assert _rejoin_figure([])[0] == "—"


def test_pass_verdict_banner(tmp_path):
    run = build_run(tmp_path / "run", learners=3, duration_s=20, with_unknown=False)
    dom = parse_html(write_report(run.path).read_text())
    banner = dom.find("header", cls="banner")
    assert banner.attrs["data-verdict"] == "pass"
    assert f"All {len(run.checks)} checks passed." in banner.text()


def test_an_interrupted_run_says_so_in_the_banner(tmp_path):
    run = build_run(tmp_path / "run", learners=3, duration_s=20)
    result = json.loads((run.path / "result.json").read_text())
    result["status"] = "interrupted"
    (run.path / "result.json").write_text(json.dumps(result))
    banner = parse_html(write_report(run.path).read_text()).find("header", cls="banner")
    assert "Run interrupted: duration reached" in banner.text()


def test_a_run_that_failed_before_ready_still_gets_a_report(tmp_path):
    # infrastructure failed: no ready, no trainer events, figures null, one check unknown
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"run_id": "abc", "seed": 1, "scenario_text": "name: x\n"}))
    (run_dir / "journal.jsonl").write_text(
        '{"t": 100.0, "kind": "run_start", "run_id": "abc"}\n'
        '{"t": 101.0, "kind": "node_start", "node": "syncer", "pid": 5, "reason": "initial"}\n'
        '{"t": 130.0, "kind": "run_end", "status": "infra_failed", "reason": "learner-0 never joined"}\n'
        '{"t": 131.0, "kind": "teardown", "lefto')  # torn last line
    (run_dir / "result.json").write_text(json.dumps({
        "scenario": "x", "status": "infra_failed", "verdict": "unknown", "goodput": None, "duration_s": None,
        "checks": [{"name": "run_completed", "verdict": "unknown", "passed": None, "expected": "completed",
                    "actual": "infra_failed"}], "faults": [], "rejoin_seconds": [], "bytes_per_link": {}}))
    dom = parse_html(write_report(run_dir).read_text())
    banner = dom.find("header", cls="banner")
    assert banner.attrs["data-verdict"] == "unknown"
    assert "Run infra_failed: learner-0 never joined" in banner.text()
    assert dom.find("div", cls="figure", data_figure="goodput").find(cls="value").text() == "—"
    assert dom.find("svg", cls="timeline").find_all("g", cls="lane-learner") == []
    assert "empty" in dom.find("svg", cls="line-chart", aria_label="Eval loss over time").classes
    suite = ET.parse(write_junit(run_dir)).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("skipped"), suite.get("errors")) == ("1", "1", "0")  # already a check


def test_fault_bars_and_labels_never_overlap_in_a_row():
    from reports.series import FaultWindow
    windows = [FaultWindow(f"f{i}", "kill", f"learner-{i % 8}", start, start + length, True)
               for i, (start, length) in enumerate([(0, 5), (3, 1), (4, 30), (10, 2), (11, 1), (50, 49), (98, 2),
                                                    (99, 1), (99.5, 0.5), (60, 0)])]
    axis = svg.TimeAxis(100)
    bars = [svg._FaultBar(w, axis) for w in windows]
    rows = svg._pack_rows(bars)
    for row in set(rows):
        spans = sorted((b.left, b.right) for b, r in zip(bars, rows) if r == row)
        assert all(a[1] + 4 <= b[0] for a, b in zip(spans, spans[1:])), spans
    assert all(b.right <= svg.WIDTH for b in bars)  # labels at the right edge go before their bar
