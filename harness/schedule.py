"""The fault schedule: a Scenario and a seed become a sorted list of concrete FaultEvents.

Fully determined by (scenario, seed): the same seed replays the same faults at the same
offsets. Each random process draws from its own ``random.Random`` seeded with the string
``"{seed}:{process index}:{target}"`` (CPython seeds from a SHA-512 of a string, stable
across runs and platforms), so adding a process or a target never shifts another's
faults.

A random process is an alternating renewal process per target: the time to the next
fault is exponential with mean ``mtbf_s`` (Poisson arrivals), and its clock runs only
while the target is healthy -- the next arrival is drawn from the moment the previous
fault of the same process heals, so a target is never faulted again by a process while
that process's previous fault is still active. Window: arrivals fall in
``[start_s, end_s)`` (``end_s`` defaults to the run's duration). A fault whose heal
would come after the window's end is dropped rather than cut short (a restart delay cut
to fit would not be the fault that was asked for); its draws are still taken so that
later draws do not shift, and the process goes on, so a later, shorter fault may fit.
Instantaneous faults (corrupt) have duration 0 and only need to start inside the window.

Times are rounded to milliseconds: schedules are compared and written to JSON, and a
millisecond is far below what any injector can honour.
"""
from __future__ import annotations

import random

from harness.model import Distribution, FaultEvent, FaultKind, RandomFaults, Scenario


def process_rng(seed: int, process_index: int, target: str) -> random.Random:
    """The generator of one (process, target) pair; depends on nothing else."""
    return random.Random(f"{seed}:{process_index}:{target}")


def draw_duration(dist: Distribution, rng: random.Random) -> float:
    if dist.kind == "fixed":
        return dist.value
    if dist.kind == "uniform":
        return rng.uniform(dist.low, dist.high)
    if dist.kind == "exponential":
        return rng.expovariate(1.0 / dist.value)
    raise ValueError(f"unknown distribution {dist.kind!r}")  # the parser lets none through


def expand_process(process: RandomFaults, index: int, target: str, seed: int,
                   run_s: float) -> list[FaultEvent]:
    """The faults one random process puts on one target."""
    rng = process_rng(seed, index, target)
    end = min(run_s, process.end_s if process.end_s is not None else run_s)
    out: list[FaultEvent] = []
    t = process.start_s
    while True:
        t += rng.expovariate(1.0 / process.mtbf_s)
        if t >= end:
            return out
        duration = draw_duration(process.duration, rng)
        at_s, duration = round(t, 3), round(duration, 3)
        if at_s + duration <= end and at_s < end:
            out.append(FaultEvent(
                fault_id=f"r{index}-{len(out):03d}-{process.kind.value}-{target}",
                at_s=at_s, kind=process.kind, target=target,
                duration_s=None if process.kind is FaultKind.CORRUPT else duration,
                params=dict(process.params)))
        t += duration  # the failure clock restarts once the target is healthy again


def build_schedule(scenario: Scenario, seed: int) -> list[FaultEvent]:
    """Timed events plus every random process expanded, sorted by time (then id)."""
    events = list(scenario.timed)
    for index, process in enumerate(scenario.random):
        for target in process.targets:
            events.extend(expand_process(process, index, target, seed, scenario.duration_s))
    return sorted(events, key=lambda e: (e.at_s, e.fault_id))
