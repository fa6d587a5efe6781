"""SPEC §2 figures from a hand-made history whose answers are worked out by hand below."""
from __future__ import annotations

import pytest

from harness.measure import allowed_compute_s, live_merges, measure
from history_builders import ORIGIN, History, contributor


def known_history() -> History:
    """Two learners, T = [0, 100] s.

    learner-0: clean rate 100 tok/s; throttled to 0.5 (a fault) over [20, 40).
    learner-1: clean rate 50 tok/s; killed over [40, 60), restarted at 60 as incarnation 1.
    Capacity C = (100 + 50) * 100 = 15000.
    Allowed: learner-0 20 + 0.5*20 + 60 = 90 s; learner-1 40 + 40 = 80 s.
    A = (100*90 + 50*80) / 15000 = 13000 / 15000.
    Merges (fraction 0.5): one before ready (not useful), 3000+3000 tokens in T, one
    voided by a rollback, one of the new incarnation (600 tokens). U = 1500+1500+300.
    """
    h = History()
    h.syncer_start(-5.0, [0, 0])
    for i in (0, 1):
        h.node_start(-4.0, f"learner-{i}")
        h.learner_start(-3.5, i)
        h.join(-3.0, i, bytes_in=100, bytes_out=1000)
    h.merge(-1.0, 0, 1, [contributor(0, "pre", (0, 100))])
    h.ready(0.0, 2)
    h.eval(5.0, 5.0)
    # learner-0: 2 clean windows at 100 tok/s, 3 throttled ones at 40 (excluded)
    for at, tokens in ((10, 100), (25, 40), (30, 40), (35, 40), (80, 100)):
        h.progress(at, 0, tokens, compute_s=1.0)
    # learner-1: 2 clean windows at 50 tok/s, 3 during its fault at 10 (excluded)
    for at, tokens in ((10, 50), (20, 50), (45, 10), (50, 10), (55, 10)):
        h.progress(at, 1, tokens, compute_s=1.0)
    h.fault(20.0, 40.0, "f000-throttle-learner-0", "throttle", "learner-0", cpu_share=0.5)
    h.node_state(20.0, "learner-0", "throttled", 0.5)
    h.node_state(40.0, "learner-0", "up")
    h.push(9.0, 0, 1, "a1", (0, 2000), bytes_in=500)
    h.merge(10.0, 1, 1, [contributor(0, "a1", (0, 2000)), contributor(1, "b1", (0, 1000))])
    h.ack(10.1, 0, 1, "a1", 1, bytes_out=20)
    h.merge(30.0, 0, 2, [contributor(0, "a2", (100, 2100)), contributor(1, "b2", (0, 1000))])
    h.merge(35.0, 1, 2, [contributor(0, "a3", (2000, 2400))])
    h.rollback(36.0, [2, 1], [(1, 2)])
    h.fault(40.0, 60.0, "f001-kill-learner-1", "kill", "learner-1")
    h.node_state(40.0, "learner-1", "down")
    h.node_start(60.0, "learner-1", reason="restart")
    h.node_state(60.0, "learner-1", "up")
    h.learner_start(62.0, 1)
    h.join(65.0, 1, incarnation=1, bytes_in=100, bytes_out=1000)
    h.first_step(67.0, 1, incarnation=1)
    h.merge(75.0, 1, 2, [contributor(1, "b3", (1000, 1600), incarnation=1)])
    h.eval(95.0, 4.0)
    h.run_end(100.0)
    h.teardown(101.0)
    return h


def test_known_answers():
    h = known_history()
    m = measure(h.events, h.journal, learners=2, quorum=2, baseline_eval_loss=3.2)
    assert m.duration_s == pytest.approx(100.0)
    assert m.rates == {0: pytest.approx(100.0), 1: pytest.approx(50.0)}
    assert m.capacity_tokens == pytest.approx(15000.0)
    assert m.allowed_s == {0: pytest.approx(90.0), 1: pytest.approx(80.0)}
    assert m.useful_tokens == pytest.approx(3300.0)
    assert m.goodput == pytest.approx(0.22)
    assert m.availability_bound == pytest.approx(13000 / 15000)
    assert m.goodput_efficiency == pytest.approx(3300 / 13000)
    assert m.tokens_merged == pytest.approx(3350.0)
    assert m.outer_updates == 4
    assert m.eval_loss_start == 5.0 and m.eval_loss_final == 4.0 and m.evals == 2
    assert m.quality_gap == pytest.approx(0.25)
    assert m.notes == ()


def test_rejoin_both_parts():
    h = known_history()
    (r,) = measure(h.events, h.journal, learners=2).rejoins
    assert (r.learner, r.incarnation) == (1, 1)
    assert r.at_s == pytest.approx(60.0)
    assert r.to_first_step_s == pytest.approx(7.0)
    assert r.to_first_merge_s == pytest.approx(15.0)
    assert r.observed_s == pytest.approx(40.0)


def test_rejoin_falls_back_to_learner_start_without_node_start_records():
    h = known_history()
    h.journal = [r for r in h.journal if r["kind"] != "node_start"]
    (r,) = measure(h.events, h.journal, learners=2).rejoins
    assert r.at_s == pytest.approx(62.0) and r.to_first_merge_s == pytest.approx(13.0)


def test_rejoin_that_never_merged_is_none():
    h = known_history()
    h.events = [e for e in h.events if not (e["ev"] == "merge" and e["version"] == 2 and e["fragment"] == 1
                                            and e["t"] > ORIGIN + 70)]
    (r,) = measure(h.events, h.journal, learners=2).rejoins
    assert r.to_first_step_s == pytest.approx(7.0) and r.to_first_merge_s is None


def test_global_stall_depends_on_quorum_up():
    h = known_history()
    # quorum 2: eligible [0, 40] and [60, 100]; merges at 10, 30, 35, 75 -> longest 75..100
    assert measure(h.events, h.journal, learners=2, quorum=2).max_global_stall_s == pytest.approx(25.0)
    # quorum 1: eligible throughout; longest gap 35..75
    assert measure(h.events, h.journal, learners=2, quorum=1).max_global_stall_s == pytest.approx(40.0)


def test_syncer_down_is_not_a_stall():
    h = known_history()
    h.node_state(36.0, "syncer", "down")
    h.node_state(74.0, "syncer", "up")
    # eligible [0, 36] and [74, 100]: gaps 10, 20, 5, 1 / 1, 25
    assert measure(h.events, h.journal, learners=2, quorum=1).max_global_stall_s == pytest.approx(25.0)


def test_wire_bytes_per_link_and_per_useful_token():
    h = known_history()
    m = measure(h.events, h.journal, learners=2)
    assert m.bytes_per_link == {"learner-0": {"in": 600, "out": 1020}, "learner-1": {"in": 200, "out": 2000}}
    assert m.wire_bytes == 3820
    assert m.wire_bytes_per_useful_token == pytest.approx(3820 / 3300)


def test_rollback_voids_only_earlier_merges_of_that_version():
    h = known_history()
    live = live_merges(h.events)
    assert [(m["fragment"], m["version"], m["t"] - ORIGIN) for m in live] == [
        (0, 1, -1.0), (1, 1, 10.0), (0, 2, 30.0), (1, 2, 75.0)]


def test_syncer_restart_voids_merges_above_the_restored_versions():
    h = History()
    h.syncer_start(0.0, [0])
    h.merge(1.0, 0, 1, [contributor(0, "a", (0, 10))])
    h.merge(2.0, 0, 2, [contributor(0, "b", (10, 20))])
    h.syncer_start(3.0, [1], restored=True)
    assert [m["version"] for m in live_merges(h.events)] == [1]


def test_availability_is_relative_to_the_baseline_cpu_share():
    h = History()
    h.node_state(10.0, "learner-0", "throttled", 0.25)
    h.node_state(20.0, "learner-0", "throttled", 0.5)
    t0, t1 = ORIGIN, ORIGIN + 30.0
    # baseline 0.5 (mixed hardware): 10 s at 1, 10 s at 0.5, 10 s at 1
    assert allowed_compute_s(h.journal, "learner-0", t0, t1, baseline_share=0.5) == pytest.approx(25.0)
    # baseline 1: 10 + 2.5 + 5
    assert allowed_compute_s(h.journal, "learner-0", t0, t1) == pytest.approx(17.5)


def test_without_ready_figures_are_unknown():
    h = known_history()
    h.journal = [r for r in h.journal if r["kind"] != "ready"]
    m = measure(h.events, h.journal, learners=2)
    assert m.goodput is None and m.goodput_efficiency is None and m.duration_s is None
    assert m.max_global_stall_s is None and any("ready" in n for n in m.notes)
    assert m.outer_updates == 4  # whole-log figures still computed


def test_without_run_end_the_window_ends_at_the_last_record():
    h = known_history()
    h.journal = [r for r in h.journal if r["kind"] != "run_end"]
    m = measure(h.events, h.journal, learners=2)
    assert m.duration_s == pytest.approx(101.0)  # the teardown record
    assert any("run_end" in n for n in m.notes)


def test_the_window_ends_at_wind_down_so_a_slow_graceful_stop_costs_nothing():
    h = known_history()
    h.jr(70.0, "wind_down")  # then the harness stops the nodes, until run_end at 100
    h.node_state(70.0, "learner-0", "down")
    h.node_state(70.0, "learner-1", "down")
    m = measure(h.events, h.journal, learners=2)
    assert m.duration_s == pytest.approx(70.0)
    assert m.allowed_s == {0: pytest.approx(20 + 10 + 30), 1: pytest.approx(40 + 10)}
    assert m.availability_bound == pytest.approx((100 * 60 + 50 * 50) / (150 * 70))
    assert m.useful_tokens == pytest.approx(3000.0)  # the merge at 75 is after T
    assert m.goodput == pytest.approx(3000.0 / (150 * 70))


def test_reconnect_runs_from_the_heal_of_a_cut_link_to_the_learners_next_merge():
    h = known_history()
    h.fault(50.0, 70.0, "f002-link_down-learner-0", "link_down", "learner-0")
    h.fault(52.0, 58.0, "f003-latency-learner-0", "latency", "learner-0")  # slows, does not cut
    h.fault(80.0, 96.0, "f004-disconnect-learner-1", "disconnect", "learner-1")
    h.merge(72.0, 0, 3, [contributor(1, "b9", (1600, 1700), incarnation=1)])  # not learner-0's
    h.merge(74.5, 1, 3, [contributor(0, "a9", (2400, 2600))])
    m = measure(h.events, h.journal, learners=2)
    assert [(r.learner, r.fault_id) for r in m.reconnects] == [
        (0, "f002-link_down-learner-0"), (1, "f004-disconnect-learner-1")]
    assert m.reconnects[0].to_first_merge_s == pytest.approx(4.5)
    assert m.reconnects[1].to_first_merge_s is None and m.reconnects[1].observed_s == pytest.approx(4.0)
    assert m.as_result_fields()["reconnect_seconds"][0] == {
        "learner": 0, "fault_id": "f002-link_down-learner-0", "to_first_merge_s": pytest.approx(4.5)}


def test_learner_without_progress_gets_the_median_rate_of_the_others():
    h = known_history()
    m = measure(h.events, h.journal, learners=3)
    assert m.rates[2] == pytest.approx(75.0)  # median of 100 and 50


def test_result_fields_cover_the_contract():
    h = known_history()
    fields = measure(h.events, h.journal, learners=2).as_result_fields()
    for key in ("goodput", "availability_bound", "goodput_efficiency", "rejoin_seconds",
                "max_global_stall_seconds", "outer_updates", "tokens_merged", "useful_tokens",
                "capacity_tokens", "wire_bytes", "wire_bytes_per_useful_token", "bytes_per_link",
                "eval_loss_final", "quality_gap", "duration_s"):
        assert key in fields
    assert fields["rejoin_seconds"] == [{"learner": 1, "to_first_step_s": pytest.approx(7.0),
                                         "to_first_merge_s": pytest.approx(15.0)}]
