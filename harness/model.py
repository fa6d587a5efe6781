"""Typed scenario model: what a parsed scenario file becomes (parse at the edge).

``harness.scenario`` turns YAML into these frozen objects, rejecting unknown keys and
bad values; ``harness.schedule`` turns a Scenario and a seed into concrete FaultEvents;
the run executes those. Nothing past the parser ever sees raw YAML.
"""
from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any, Mapping

from harness.backend import LinkSpec
from trainers.config import TrainerConfig


class FaultKind(str, enum.Enum):
    # process / container (SPEC §4)
    KILL = "kill"  # SIGKILL; restarted after duration_s (None: stays down)
    STOP = "stop"  # graceful stop; restarted after duration_s
    PAUSE = "pause"  # SIGSTOP / docker pause for duration_s (a straggler or hang)
    THROTTLE = "throttle"  # CPU share (params.cpu_share) for duration_s
    SYNCER_CRASH = "syncer_crash"  # SIGKILL the synchronizer, restart after duration_s
    # link (Toxiproxy; params.direction: upstream|downstream|both)
    LATENCY = "latency"  # params.latency_ms, params.jitter_ms
    BANDWIDTH = "bandwidth"  # params.rate_kbps (KB/s)
    TIMEOUT = "timeout"  # params.timeout_ms (0 = blackhole)
    RESET_PEER = "reset_peer"  # params.timeout_ms
    LIMIT_DATA = "limit_data"  # params.bytes
    SLICER = "slicer"  # params.average_size, size_variation, delay_us
    SLOW_CLOSE = "slow_close"  # params.delay_ms
    LINK_DOWN = "link_down"  # proxy disabled (partition) for duration_s
    FLAP = "flap"  # link down/up every params.period_s for duration_s
    # container network (compose backend only)
    DISCONNECT = "disconnect"  # IP-level partition for duration_s
    # data
    CORRUPT = "corrupt"  # params.value: nan|norm — the learner's next push is corrupted


LINK_FAULTS = frozenset({FaultKind.LATENCY, FaultKind.BANDWIDTH, FaultKind.TIMEOUT,
                         FaultKind.RESET_PEER, FaultKind.LIMIT_DATA, FaultKind.SLICER,
                         FaultKind.SLOW_CLOSE, FaultKind.LINK_DOWN, FaultKind.FLAP})


@dataclasses.dataclass(frozen=True)
class FaultEvent:
    """One concrete fault of a schedule: fully determined by scenario and seed."""

    fault_id: str  # "f007-kill-learner-2": stable across replays of the same seed
    at_s: float  # offset from the moment every learner is ready
    kind: FaultKind
    target: str  # node name: "learner-2", "syncer"
    duration_s: float | None  # heal this long after inject; None = heal at the end
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A duration drawn per fault: fixed value, uniform [low, high] or exponential(mean)."""

    kind: str  # "fixed" | "uniform" | "exponential"
    value: float = 0.0  # fixed value, or the exponential's mean
    low: float = 0.0
    high: float = 0.0


@dataclasses.dataclass(frozen=True)
class RandomFaults:
    """A seeded random process: Poisson arrivals per target with mean time between failures."""

    kind: FaultKind
    targets: tuple[str, ...]  # node names, expanded from "learners" by the parser
    mtbf_s: float
    duration: Distribution
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    start_s: float = 0.0
    end_s: float | None = None  # None = the scenario's duration


@dataclasses.dataclass(frozen=True)
class Checks:
    """Thresholds of the resilience checks; None leaves a check out."""

    goodput_min: float | None = None
    goodput_efficiency_min: float | None = None
    rejoin_max_s: float | None = None
    reconnect_max_s: float | None = None  # a partitioned learner merging again after the heal
    max_stall_s: float | None = None
    quality_gap_max: float | None = None
    eval_loss_drop_min: float | None = None  # fraction the eval loss must fall from its start
    invariants: bool = True  # SPEC §3 items 1-7


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    path: Path | None
    description: str
    duration_s: float
    trainer: TrainerConfig
    cpu_shares: tuple[float, ...] = ()  # per learner; empty = unthrottled
    links: tuple[LinkSpec, ...] = ()  # per learner baseline
    timed: tuple[FaultEvent, ...] = ()  # explicit events (fault_id filled by the parser)
    random: tuple[RandomFaults, ...] = ()
    checks: Checks = Checks()
    seed: int = 0  # default seed; --seed overrides
    ready_timeout_s: float = 120.0
    text: str = ""  # the scenario file as written, for replay and reports
