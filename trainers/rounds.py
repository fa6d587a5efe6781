"""When to merge a fragment: minimum quorum plus the adaptive grace window (SPEC §1).

A pure state machine. Nothing here sleeps, spawns or reads a clock by itself: every
method that depends on time takes ``now`` (seconds, any monotonic origin), so the
synchronizer passes ``time.monotonic()`` and tests pass a fake clock.

One ``FragmentRound`` per fragment in progress:

1. it opens at its first contribution (``opened_at``);
2. it records contributions, one per learner (a second push by the same learner in the
   same round replaces the first, whose counters it includes; ``add`` returns the
   replaced one so the caller can log it as ``superseded``);
3. it reaches quorum when K distinct learners have contributed (``quorum_at``); the
   grace window is fixed at that moment from ``AdaptiveGrace.window()``;
4. ``should_merge(now)`` is true once quorum is reached and either every expected
   learner has contributed or ``now >= quorum_at + grace_s``.

``AdaptiveGrace`` keeps exponential moving averages of ξ_step (inner step time, as
learners report it), ξ_quorum (round open → quorum) and ξ_sync (merge-and-send) and
gives ``grace = γ·(τ·ξ_step − ξ_quorum − ξ_sync)``, clamped to ``[0, cap_steps·ξ_step]``:
the time the synchronizer can still wait for stragglers without making the fast
learners apply the merged fragment later than τ steps after they pushed it. Until a
step time has been observed the window is 0 (no basis to wait).

Synchronous modes (``ddp``, ``diloco``) use K = every expected learner and no grace
(``grace=None``): the round merges exactly when everyone has contributed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Generic, Iterable, TypeVar

T = TypeVar("T")


class Ema:
    """Exponential moving average; the first observation initialises it."""

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.value: float | None = None

    def update(self, x: float) -> float:
        self.value = x if self.value is None else self.alpha * x + (1 - self.alpha) * self.value
        return self.value

    def get(self, default: float = 0.0) -> float:
        return default if self.value is None else self.value


class AdaptiveGrace:
    """The grace window from the EMAs of ξ_step, ξ_quorum and ξ_sync."""

    def __init__(self, gamma: float, tau: float, cap_steps: float = 1.0, alpha: float = 0.2) -> None:
        if not 0 <= gamma < 1:
            raise ValueError(f"gamma must be in [0, 1), got {gamma}")
        if tau < 0 or cap_steps < 0:
            raise ValueError(f"tau and cap_steps must be >= 0, got {tau}, {cap_steps}")
        self.gamma, self.tau, self.cap_steps = gamma, tau, cap_steps
        self.step_s, self.quorum_s, self.sync_s = Ema(alpha), Ema(alpha), Ema(alpha)

    def observe_step(self, seconds: float) -> None:
        self.step_s.update(seconds)

    def observe_quorum(self, seconds: float) -> None:
        self.quorum_s.update(seconds)

    def observe_sync(self, seconds: float) -> None:
        self.sync_s.update(seconds)

    def window(self) -> float:
        if self.step_s.value is None:
            return 0.0
        step = self.step_s.value
        raw = self.gamma * (self.tau * step - self.quorum_s.get() - self.sync_s.get())
        return min(max(raw, 0.0), self.cap_steps * step)

    def snapshot(self) -> dict[str, Any]:
        """For logs and /status."""
        return {"step_s": self.step_s.value, "quorum_s": self.quorum_s.value,
                "sync_s": self.sync_s.value, "grace_s": self.window()}


class FragmentRound(Generic[T]):
    """Contributions to one fragment since its last merge. ``T`` is whatever the caller
    stores per learner (a merge.Contribution plus its metadata)."""

    def __init__(self, fragment: int, *, quorum: int, expected: Iterable[int],
                 grace: AdaptiveGrace | None, now: float) -> None:
        if quorum < 1:
            raise ValueError(f"quorum must be at least 1, got {quorum}")
        self.fragment = fragment
        self.quorum = quorum
        self.expected = frozenset(expected)
        self.grace = grace
        self.opened_at = now
        self.quorum_at: float | None = None
        self.grace_s = 0.0
        self.contributions: dict[int, T] = {}

    def add(self, learner: int, item: T, now: float) -> T | None:
        """Records ``learner``'s contribution; returns the one it replaces, if any."""
        previous = self.contributions.get(learner)
        self.contributions[learner] = item
        self._check_quorum(now)
        return previous

    def update(self, now: float, *, expected: Iterable[int] | None = None,
               quorum: int | None = None) -> None:
        """Learners joined or were dropped (elastic): a smaller K may reach quorum now."""
        if expected is not None:
            self.expected = frozenset(expected)
        if quorum is not None:
            if quorum < 1:
                raise ValueError(f"quorum must be at least 1, got {quorum}")
            self.quorum = quorum
        self._check_quorum(now)

    def _check_quorum(self, now: float) -> None:
        if self.quorum_at is None and len(self.contributions) >= self.quorum:
            self.quorum_at = now
            self.grace_s = self.grace.window() if self.grace is not None else 0.0

    @property
    def has_quorum(self) -> bool:
        return self.quorum_at is not None

    @property
    def everyone_in(self) -> bool:
        return self.expected <= self.contributions.keys()

    @property
    def quorum_wait_s(self) -> float | None:
        return None if self.quorum_at is None else self.quorum_at - self.opened_at

    def should_merge(self, now: float) -> bool:
        if self.quorum_at is None:
            return False
        return self.everyone_in or now >= self.quorum_at + self.grace_s

    def deadline(self, now: float) -> float | None:
        """When the caller should call ``should_merge`` again: ``now`` if it is already
        true, the end of the grace window if that is pending, None if only a new
        contribution (or ``update``) can change the answer."""
        if self.should_merge(now):
            return now
        if self.quorum_at is None:
            return None
        return self.quorum_at + self.grace_s


@dataclasses.dataclass
class RoundTable(Generic[T]):
    """The open rounds of every fragment, opened on demand at first contribution."""

    quorum: int
    grace: AdaptiveGrace | None
    expected: frozenset[int] = frozenset()
    rounds: dict[int, FragmentRound[T]] = dataclasses.field(default_factory=dict)

    def add(self, fragment: int, learner: int, item: T, now: float) -> T | None:
        rnd = self.rounds.get(fragment)
        if rnd is None:
            rnd = self.rounds[fragment] = FragmentRound(
                fragment, quorum=self.quorum, expected=self.expected, grace=self.grace, now=now)
        return rnd.add(learner, item, now)

    def set_expected(self, expected: Iterable[int], now: float, quorum: int | None = None) -> None:
        self.expected = frozenset(expected)
        if quorum is not None:
            self.quorum = quorum
        for rnd in self.rounds.values():
            rnd.update(now, expected=self.expected, quorum=quorum)

    def ready(self, now: float) -> list[int]:
        """Fragments whose round should be merged now, lowest first."""
        return sorted(p for p, rnd in self.rounds.items() if rnd.should_merge(now))

    def next_deadline(self, now: float) -> float | None:
        times = [d for rnd in self.rounds.values() if (d := rnd.deadline(now)) is not None]
        return min(times) if times else None

    def close(self, fragment: int) -> FragmentRound[T]:
        """Removes and returns the round (the caller merges its contributions and
        feeds ``quorum_wait_s`` and its merge time back into the grace EMAs)."""
        return self.rounds.pop(fragment)
