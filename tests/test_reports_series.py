"""The report's time series: pure functions of journal and events, with exact values."""
from __future__ import annotations

import pytest

from report_fixtures import T0, build_run
from reports import series
from reports.rundir import load_run
from reports.series import Interval


def j(t: float, kind: str, **f):
    return {"t": T0 + t, "kind": kind, **f}


def e(t: float, src: str, ev: str, **f):
    return {"t": T0 + t, "src": src, "ev": ev, **f}


JOURNAL = [j(-2, "run_start"), j(0, "ready", learners=2),
           j(10, "fault_inject", fault_id="f1", fault="kill", target="learner-1"),
           j(10, "node_state", node="learner-1", state="down", cpu_share=0.0),
           j(15, "fault_heal", fault_id="f1", fault="kill", target="learner-1"),
           j(15, "node_start", node="learner-1", reason="restart"),
           j(15.5, "node_state", node="learner-1", state="up", cpu_share=1.0),
           j(20, "fault_inject", fault_id="f2", fault="link_down", target="learner-0"),
           j(20, "node_state", node="learner-0", state="partitioned", cpu_share=1.0),
           j(30, "fault_inject", fault_id="f3", fault="corrupt", target="learner-0"),
           j(40, "run_end", status="completed")]
EVENTS = [e(17, "learner-1", "first_step", learner=1, incarnation=1)]


def test_span_starts_at_ready_and_ends_at_run_end():
    span = series.run_span(JOURNAL, EVENTS)
    assert span.t0 == T0 and span.duration == 40


def test_fault_windows_pair_inject_with_heal_and_leave_unhealed_open_to_the_end():
    span = series.run_span(JOURNAL, EVENTS)
    ws = {w.fault_id: w for w in series.fault_windows(JOURNAL, span)}
    assert (ws["f1"].start, ws["f1"].end, ws["f1"].healed) == (10, 15, True)
    assert (ws["f2"].start, ws["f2"].end, ws["f2"].healed) == (20, 40, False)
    assert ws["f3"].start == ws["f3"].end == 30  # corrupt is an instant


def test_lane_shows_down_then_rejoining_until_first_step():
    span = series.run_span(JOURNAL, EVENTS)
    assert series.node_lane("learner-1", JOURNAL, EVENTS, span) == [
        Interval(0, 10, "up"), Interval(10, 15, "down"), Interval(15, 17, "rejoining"), Interval(17, 40, "up")]
    assert series.node_lane("learner-0", JOURNAL, EVENTS, span) == [Interval(0, 20, "up"), Interval(20, 40, "partitioned")]
    lanes = series.lanes(JOURNAL, EVENTS, span, series.learner_names(JOURNAL, EVENTS))
    assert list(lanes) == ["syncer", "learner-0", "learner-1"]


def test_syncer_lane_restarting_ends_when_it_listens_again():
    journal = [j(0, "ready", learners=[0]), j(5, "node_state", node="syncer", state="down", cpu_share=0.0),
               j(8, "node_start", node="syncer", reason="restart"),
               j(8, "node_state", node="syncer", state="up", cpu_share=1.0), j(20, "run_end")]
    events = [e(-1, "syncer", "syncer_start"), e(9.5, "syncer", "syncer_start", restored=True)]
    span = series.run_span(journal, events)
    assert series.node_lane("syncer", journal, events, span) == [
        Interval(0, 5, "up"), Interval(5, 8, "down"), Interval(8, 9.5, "rejoining"), Interval(9.5, 20, "up")]


def test_useful_tokens_count_merges_and_drop_what_a_rollback_voided():
    span = series.Span(T0, 10)
    def merge(t, fragment, version, *tokens):
        return e(t, "syncer", "merge", fragment=fragment, version=version, fraction=0.5, tokens=sum(tokens),
                 contributors=[{"learner": i, "tokens": tok} for i, tok in enumerate(tokens)])

    events = [merge(1, 0, 1, 100, 100), merge(2, 1, 1, 50, 50),
              e(3, "syncer", "rollback", to_versions=[1, 0], voided=[{"fragment": 1, "version": 1}]),
              merge(4, 1, 1, 30, 30),
              e(5, "syncer", "syncer_start", restored=True, versions=[0, 1]),  # fragment 0 v1 lost
              merge(20, 0, 1, 10, 10)]  # after the run: not in T
    assert series.useful_tokens(events, span) == [(0, 0), (1, 100), (2, 150), (3, 100), (4, 130), (5, 30)]
    versions = series.fragment_versions(events, span)
    assert versions[1] == [(2, 1), (3, 0), (4, 1), (5, 1)]


def test_rolling_goodput_is_one_when_everything_computed_is_merged():
    span = series.Span(T0, 100)
    events = [e(t / 2, "syncer", "merge", fragment=0, version=t, fraction=1.0, tokens=500,
                contributors=[{"learner": 0, "tokens": 500}]) for t in range(1, 201)]
    useful = series.useful_tokens(events, span)
    rolling = series.rolling_goodput(useful, 1000.0, 100)
    assert rolling[0][0] == series.rolling_window_s(100)  # no partial first window
    assert all(g == pytest.approx(1.0, abs=0.11) for _, g in rolling)


def test_downsample_bounds_points_and_keeps_spikes_and_ends():
    pts = [(float(i), 0.0) for i in range(100_000)]
    pts[31_337] = (31_337.0, 99.0)
    pts[77_777] = (77_777.0, -5.0)
    out = series.downsample(pts, 500)
    assert len(out) <= 4 * 500
    assert out[0] == pts[0] and out[-1] == pts[-1]
    assert (31_337.0, 99.0) in out and (77_777.0, -5.0) in out
    assert [p[0] for p in out] == sorted(p[0] for p in out)


def test_series_from_the_fixture_agree_with_its_result_json(tmp_path):
    built = build_run(tmp_path / "run", learners=5, duration_s=40)
    run = load_run(built.path)
    span = series.run_span(run.journal, run.events)
    assert span.duration == 40
    assert series.useful_tokens(run.events, span)[-1][1] == pytest.approx(built.result["useful_tokens"])
    assert series.capacity_rate(run.result, run.events) * 40 == pytest.approx(built.result["capacity_tokens"])
    # the rolling curve averages to about the headline goodput
    rolling = series.rolling_goodput(series.useful_tokens(run.events, span), series.capacity_rate(run.result, run.events), 40)
    mean = sum(g for _, g in rolling) / len(rolling)
    assert mean == pytest.approx(built.result["goodput"], abs=0.08)
    assert series.learner_names(run.journal, run.events) == built.learners
    links = series.bytes_per_link({}, run.events)  # recomputed from events when result.json has none
    assert list(links) == built.learners and all(b_in > 0 and b_out > 0 for b_in, b_out in links.values())
