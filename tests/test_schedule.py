"""The seeded schedule: replayable, independent per process, honest Poisson, bounded."""
from __future__ import annotations

import dataclasses
import statistics

import pytest

from harness.model import Distribution, FaultKind, RandomFaults
from harness.scenario import parse_scenario
from harness.schedule import build_schedule, expand_process

BASE = """
duration_s: 300
cluster: {learners: 4}
faults:
  events:
    - {at_s: 5, kind: kill, target: learner-0, duration_s: 3}
  random:
    - {kind: kill, targets: learners, mtbf_s: 40, duration: {uniform: [2, 6]}}
"""


def scenario(text: str = BASE):
    return parse_scenario(text, "test.yaml")


def test_same_seed_same_schedule_and_different_seed_different():
    s = scenario()
    a, b = build_schedule(s, 7), build_schedule(s, 7)
    assert a == b and len(a) > 5
    assert build_schedule(s, 8) != a
    # replay survives a re-parse of the same text (nothing depends on object identity)
    assert build_schedule(scenario(), 7) == a


def test_schedule_is_sorted_and_ids_are_unique():
    sched = build_schedule(scenario(), 3)
    assert [e.at_s for e in sched] == sorted(e.at_s for e in sched)
    assert len({e.fault_id for e in sched}) == len(sched)


def test_adding_a_process_or_a_target_does_not_shift_other_faults():
    s = scenario()
    before = [e for e in build_schedule(s, 11) if e.fault_id.startswith("r0-")]
    extra = RandomFaults(kind=FaultKind.PAUSE, targets=("learner-1",), mtbf_s=20,
                         duration=Distribution("fixed", value=1.0))
    with_extra = dataclasses.replace(s, random=(*s.random, extra))
    after = build_schedule(with_extra, 11)
    assert [e for e in after if e.fault_id.startswith("r0-")] == before
    assert any(e.fault_id.startswith("r1-") for e in after)
    # a process over fewer targets gives the remaining targets the very same faults
    fewer = dataclasses.replace(s, random=(dataclasses.replace(s.random[0], targets=("learner-2",)),))
    only2 = [e for e in build_schedule(fewer, 11) if e.fault_id.startswith("r0-")]
    assert only2 == [e for e in before if e.target == "learner-2"] and only2


def test_poisson_arrival_rate_matches_mtbf():
    # Instantaneous faults: arrivals are a Poisson process of rate 1/mtbf. Over 1000 s with
    # mtbf 10 s the count is Poisson(100) (sd 10); the mean of 300 seeds has sd 0.58, so
    # +-3 is over five standard deviations.
    process = RandomFaults(kind=FaultKind.CORRUPT, targets=("learner-0",), mtbf_s=10.0,
                           duration=Distribution("fixed", value=0.0), params={"value": "nan"})
    counts, gaps = [], []
    for seed in range(300):
        events = expand_process(process, 0, "learner-0", seed, run_s=1000.0)
        counts.append(len(events))
        gaps += [b.at_s - a.at_s for a, b in zip(events, events[1:])]
    assert statistics.fmean(counts) == pytest.approx(100.0, abs=3.0)
    assert statistics.variance(counts) == pytest.approx(100.0, rel=0.3)  # Poisson: variance = mean
    assert statistics.fmean(gaps) == pytest.approx(10.0, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(10.0, rel=0.05)  # exponential: sd = mean


def test_failure_clock_runs_only_while_healthy():
    # mtbf 10 s plus a fixed 5 s fault: one cycle lasts 15 s on average, ~66 per 1000 s.
    process = RandomFaults(kind=FaultKind.PAUSE, targets=("learner-0",), mtbf_s=10.0,
                           duration=Distribution("fixed", value=5.0))
    counts = [len(expand_process(process, 0, "learner-0", seed, run_s=1000.0)) for seed in range(300)]
    assert statistics.fmean(counts) == pytest.approx(1000.0 / 15.0, rel=0.04)


@pytest.mark.parametrize("duration", [
    Distribution("fixed", value=4.0),
    Distribution("uniform", low=1.0, high=9.0),
    Distribution("exponential", value=6.0),
])
def test_no_overlap_within_a_process_and_window_bounds(duration):
    process = RandomFaults(kind=FaultKind.KILL, targets=("learner-0", "learner-1"), mtbf_s=8.0,
                           duration=duration, start_s=20.0, end_s=150.0)
    for seed in range(50):
        for target in process.targets:
            events = expand_process(process, 0, target, seed, run_s=200.0)
            for e in events:
                assert 20.0 <= e.at_s < 150.0
                assert e.at_s + e.duration_s <= 150.0  # healed inside the window
                assert e.target == target
            for a, b in zip(events, events[1:]):
                assert b.at_s >= a.at_s + a.duration_s  # never faulted while still faulted


def test_durations_follow_the_distribution():
    process = RandomFaults(kind=FaultKind.PAUSE, targets=("learner-0",), mtbf_s=5.0,
                           duration=Distribution("uniform", low=2.0, high=4.0))
    durations = [e.duration_s for seed in range(100)
                 for e in expand_process(process, 0, "learner-0", seed, run_s=1000.0)]
    assert min(durations) >= 2.0 and max(durations) <= 4.0
    assert statistics.fmean(durations) == pytest.approx(3.0, abs=0.05)


def test_window_end_defaults_to_the_run_duration_and_never_passes_it():
    process = RandomFaults(kind=FaultKind.KILL, targets=("learner-0",), mtbf_s=3.0,
                           duration=Distribution("fixed", value=2.0))
    events = [e for seed in range(30) for e in expand_process(process, 0, "learner-0", seed, run_s=60.0)]
    assert events and max(e.at_s + e.duration_s for e in events) <= 60.0


def test_corrupt_faults_are_instantaneous_and_carry_params():
    s = scenario("""
duration_s: 100
cluster: {learners: 2}
faults:
  random:
    - {kind: corrupt, targets: [learner-1], mtbf_s: 10, value: norm}
""")
    sched = build_schedule(s, 0)
    assert sched and all(e.duration_s is None and e.params == {"value": "norm"} for e in sched)
    assert all(e.target == "learner-1" and e.fault_id.startswith("r0-") for e in sched)


def test_library_schedules_are_replayable():
    from pathlib import Path

    from harness.scenario import load_scenario
    for path in sorted(Path(__file__).resolve().parent.parent.glob("scenarios/*.yaml")):
        s = load_scenario(path)
        assert build_schedule(s, 1) == build_schedule(load_scenario(path), 1), path
        assert all(e.at_s < s.duration_s for e in build_schedule(s, 1))
