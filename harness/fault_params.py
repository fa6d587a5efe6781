"""What each fault kind accepts: its targets, its duration rule and its parameters.

One table, read by the scenario parser (``harness.scenario``) to validate a fault and
fill in defaults, so that every injector receives complete, checked parameters and
never has to guess. The parameter names follow the comments of ``harness.model.FaultKind``
and Toxiproxy's toxic attributes (``latency``/``jitter`` in ms, ``rate`` in KB/s, ...).
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

from harness.model import FaultKind, LINK_FAULTS


class Targets(str, enum.Enum):
    LEARNER = "learner"  # learner-0 .. learner-{N-1}
    SYNCER = "syncer"


class DurationRule(str, enum.Enum):
    REQUIRED = "required"  # a positive duration (a syncer crash must come back)
    OPTIONAL = "optional"  # absent or null: healed when the run ends
    RESTART = "restart"  # kill/stop: the restart delay, >= 0; absent: stays down
    NONE = "none"  # instantaneous (corrupt): no duration allowed


@dataclasses.dataclass(frozen=True)
class Param:
    type: type  # float, int or str
    required: bool = False
    default: Any = None
    low: float | None = None  # inclusive unless low_open
    low_open: bool = False
    high: float | None = None  # inclusive
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        parts = ["an integer" if self.type is int else "a number"]
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class KindRule:
    targets: Targets
    duration: DurationRule
    params: dict[str, Param] = dataclasses.field(default_factory=dict)


_DIRECTION = Param(str, default="both", choices=("upstream", "downstream", "both"))
_TOXICITY = Param(float, default=1.0, low=0.0, high=1.0)  # Toxiproxy: share of connections hit


def _link(**params: Param) -> KindRule:
    return KindRule(Targets.LEARNER, DurationRule.OPTIONAL,
                    {**params, "direction": _DIRECTION, "toxicity": _TOXICITY})


RULES: dict[FaultKind, KindRule] = {
    FaultKind.KILL: KindRule(Targets.LEARNER, DurationRule.RESTART),
    FaultKind.STOP: KindRule(Targets.LEARNER, DurationRule.RESTART, {
        "timeout_s": Param(float, default=10.0, low=0.0, low_open=True)}),  # SIGTERM, then SIGKILL
    FaultKind.PAUSE: KindRule(Targets.LEARNER, DurationRule.REQUIRED),
    # A learner runs one torch thread, so a share above one core would not slow it.
    FaultKind.THROTTLE: KindRule(Targets.LEARNER, DurationRule.OPTIONAL, {
        "cpu_share": Param(float, required=True, low=0.0, low_open=True, high=1.0)}),
    FaultKind.SYNCER_CRASH: KindRule(Targets.SYNCER, DurationRule.REQUIRED),
    FaultKind.LATENCY: _link(latency_ms=Param(float, required=True, low=0.0),
                             jitter_ms=Param(float, default=0.0, low=0.0)),
    FaultKind.BANDWIDTH: _link(rate_kbps=Param(float, required=True, low=0.0, low_open=True)),
    FaultKind.TIMEOUT: _link(timeout_ms=Param(float, required=True, low=0.0)),  # 0 = blackhole
    FaultKind.RESET_PEER: _link(timeout_ms=Param(float, default=0.0, low=0.0)),
    FaultKind.LIMIT_DATA: _link(bytes=Param(int, required=True, low=0)),
    FaultKind.SLICER: _link(average_size=Param(int, required=True, low=1),
                            size_variation=Param(int, default=0, low=0),
                            delay_us=Param(int, default=0, low=0)),
    FaultKind.SLOW_CLOSE: _link(delay_ms=Param(float, required=True, low=0.0)),
    FaultKind.LINK_DOWN: KindRule(Targets.LEARNER, DurationRule.OPTIONAL),
    FaultKind.FLAP: KindRule(Targets.LEARNER, DurationRule.OPTIONAL, {
        "period_s": Param(float, default=2.0, low=0.0, low_open=True)}),
    FaultKind.DISCONNECT: KindRule(Targets.LEARNER, DurationRule.OPTIONAL),
    FaultKind.CORRUPT: KindRule(Targets.LEARNER, DurationRule.NONE, {
        "value": Param(str, required=True, choices=("nan", "norm"))}),
}

assert set(RULES) == set(FaultKind), "every fault kind needs a rule"
assert all(RULES[k].targets is Targets.LEARNER for k in LINK_FAULTS)
