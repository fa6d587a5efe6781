"""The report of a real run: `chaosloco run` trains a real two-learner cluster on loopback,
kills one learner and pauses the other; the run loop writes report.html and junit.xml.
The report must show what the real logs hold (a lane per learner, the kill's down and
rejoining stretch, a shaded window per fault, a row per check), its curves must be drawn,
and Chromium must render it."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from report_fixtures import SECRET, parse_html
from test_reports_browser import near, screenshot
from test_reports_junit import check_schema
from reports import svg

REPO = Path(__file__).resolve().parent.parent
SCENARIO = """\
name: report-real-run
description: a short real run for the report test
duration_s: 25
seed: 3
cluster:
  learners: 2
  mode: decoupled
  preset: tiny
  trainer:
    fragments: 4
    sync_every: 12
faults:
  events:
    - {at_s: 6, kind: kill, target: learner-1, duration_s: 3}
    - {at_s: 14, kind: pause, target: learner-0, duration_s: 3}
checks:
  rejoin_max_s: 30
  invariants: true
"""


@pytest.fixture
def real_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")  # tmp_path_factory: the test also takes tmp_path
    scenario = base / "report-real-run.yaml"
    scenario.write_text(SCENARIO)
    out = base / "run"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(scenario), "--quiet", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert (out / "result.json").is_file(), proc.stderr[-3000:]
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # judged (pass or a failed check), not broken
    return out, json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_real_run_report_shows_the_logs_and_renders(real_run, tmp_path):
    out, result = real_run
    text = (out / "report.html").read_text()
    assert (out / "secret").read_text().strip() not in text and SECRET not in text
    dom = parse_html(text)
    assert dom.find("header", cls="banner").attrs["data-verdict"] == result["verdict"]
    rows = dom.find("table", cls="checks").find_all("tr", cls="check")
    assert sorted(r.attrs["data-check"] for r in rows) == sorted(c["name"] for c in result["checks"])
    timeline = dom.find("svg", cls="timeline")
    lanes = {g.attrs["data-lane"]: g for g in timeline.find_all("g", cls="lane-learner")}
    assert list(lanes) == ["learner-0", "learner-1"]
    assert lanes["learner-1"].find_all("rect", cls="state-down")
    assert lanes["learner-1"].find_all("rect", cls="state-rejoining")
    assert lanes["learner-0"].find_all("rect", cls="state-paused")
    shades = timeline.find_all("rect", cls="fault-shade")
    assert sorted(s.attrs["data-fault"] for s in shades) == sorted(f["fault_id"] for f in result["faults"])
    kill = next(s for s in shades if "kill" in s.attrs["data-fault"])
    down = lanes["learner-1"].find("rect", cls="state-down")
    assert abs(float(kill.attrs["x"]) - float(down.attrs["x"])) < 2.0  # the kill's window starts the down stretch
    charts = {c.attrs["aria-label"]: c for c in dom.find_all("svg", cls="line-chart")}
    for label in ("Cumulative tokens over time", "Rolling goodput", "Eval loss over time", "Fragment versions over time"):
        assert charts[label].find_all("path", cls="series"), label
    assert len(charts["Fragment versions over time"].find_all("path", cls="series")) == 4
    assert int(charts["Cumulative tokens over time"].find_all("path", cls="series")[2].attrs["data-points"]) > 10
    root = ET.parse(out / "junit.xml").getroot()
    check_schema(root)
    assert [c.get("name") for c in root.iter("testcase")] == [c["name"] for c in result["checks"]]

    # one cluster run serves both halves (a second fixture user could land on another
    # xdist worker and start a second cluster); screenshot() skips if chromium is missing
    img = screenshot(out / "report.html", tmp_path / "real.png", tmp_path / "profile")
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200
    assert near(img, svg.STATE_COLOURS["up"], tol=6).sum() > 20_000
    assert near(img, svg.STATE_COLOURS["down"], tol=6).sum() > 300
