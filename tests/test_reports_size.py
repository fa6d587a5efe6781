"""A 10-minute, 8-learner run's report stays under 2 MB: long series are downsampled
(min-max decimation to a few points per pixel column, series.downsample) before they
become SVG paths, and coordinates carry one decimal."""
from __future__ import annotations

import pytest

from report_fixtures import build_run, parse_html
from reports import svg
from reports.html import write_report
from reports.junit import write_junit
from reports.rundir import load_run

LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    # ~2400 merges and 4800 progress windows: about what the tiny preset logs in 10 minutes
    return build_run(tmp_path_factory.mktemp("long") / "run", learners=8, duration_s=600, merge_every_s=0.25)


def test_ten_minute_eight_learner_report_is_under_2_mb(long_run):
    events_size = (long_run.path / "events.jsonl").stat().st_size
    assert events_size > 5 * LIMIT, "the fixture must be big enough for the bound to mean something"
    path = write_report(long_run.path)
    size = path.stat().st_size
    assert size < LIMIT, f"report is {size} bytes"
    assert write_junit(long_run.path).stat().st_size < 64 * 1024


def test_long_series_are_downsampled_for_plotting(long_run):
    dom = parse_html(write_report(long_run.path).read_text())
    progress = sum(1 for e in load_run(long_run.path).events if e.get("ev") == "progress")
    paths = [p for c in dom.find_all("svg", cls="line-chart") for p in c.find_all("path", cls="series")]
    assert all(int(p.attrs["data-points"]) <= 4 * svg.MAX_POINTS for p in paths)
    computed = next(p for p in paths if p.find("title").text() == "tokens computed")
    assert int(computed.attrs["data-points"]) < progress  # fewer points than events, still a curve
    assert int(computed.attrs["data-points"]) > svg.MAX_POINTS // 2
    lanes = dom.find("svg", cls="timeline").find_all("g", cls="lane-learner")
    assert len(lanes) == 8
