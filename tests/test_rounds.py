"""Quorum rounds and the adaptive grace window on a fake clock: exact times."""
from __future__ import annotations

import pytest

from trainers.rounds import AdaptiveGrace, Ema, FragmentRound, RoundTable


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


def grace_with(step=1.0, quorum=0.2, sync=0.1, gamma=0.5, tau=2, cap=1.0) -> AdaptiveGrace:
    g = AdaptiveGrace(gamma=gamma, tau=tau, cap_steps=cap)
    g.observe_step(step)
    g.observe_quorum(quorum)
    g.observe_sync(sync)
    return g


def test_ema_first_value_then_smoothing():
    e = Ema(alpha=0.5)
    assert e.get(7.0) == 7.0 and e.value is None
    assert e.update(4.0) == 4.0
    assert e.update(2.0) == 3.0
    assert e.update(3.0) == 3.0
    with pytest.raises(ValueError):
        Ema(alpha=0.0)


def test_grace_formula_exact():
    # 0.5 * (2 * 1.0 - 0.2 - 0.1) = 0.85, under the cap of 1 step
    assert grace_with().window() == pytest.approx(0.85)


def test_grace_zero_before_any_step_time():
    g = AdaptiveGrace(gamma=0.5, tau=2)
    g.observe_quorum(0.1)
    assert g.window() == 0.0


def test_grace_clamped_to_cap_and_to_zero():
    assert grace_with(cap=0.5).window() == pytest.approx(0.5)  # cap 0.5 steps of 1 s
    assert grace_with(step=1.0, quorum=3.0).window() == 0.0    # quorum slower than tau steps


def test_grace_adapts_to_the_step_time_ema():
    g = AdaptiveGrace(gamma=0.5, tau=2, cap_steps=1.0, alpha=0.5)
    g.observe_step(0.2)
    assert g.window() == pytest.approx(0.2)  # 0.5*(0.4) = 0.2, cap 0.2
    g.observe_step(1.0)                       # EMA 0.6
    assert g.window() == pytest.approx(0.6)   # 0.5*1.2 = 0.6, cap 0.6
    g.observe_quorum(0.8)
    g.observe_sync(0.2)
    assert g.window() == pytest.approx(0.1)   # 0.5*(1.2 - 0.8 - 0.2)
    assert g.snapshot()["grace_s"] == pytest.approx(0.1)


def test_quorum_one_merges_after_the_grace_window():
    clock = FakeClock()
    rnd = FragmentRound(3, quorum=1, expected={0, 1, 2}, grace=grace_with(), now=clock())
    assert not rnd.should_merge(clock()) and rnd.deadline(clock()) is None
    clock.advance(0.3)
    rnd.add(0, "c0", clock())
    assert rnd.has_quorum and rnd.quorum_wait_s == pytest.approx(0.3)
    assert rnd.grace_s == pytest.approx(0.85)
    assert rnd.deadline(clock()) == pytest.approx(100.3 + 0.85)
    assert not rnd.should_merge(clock.advance(0.84))
    assert rnd.should_merge(clock.advance(0.01))
    assert rnd.deadline(clock()) == clock()


def test_quorum_one_merges_at_once_when_everyone_is_in():
    clock = FakeClock()
    rnd = FragmentRound(0, quorum=1, expected={0, 1}, grace=grace_with(), now=clock())
    rnd.add(1, "a", clock.advance(0.1))
    assert not rnd.should_merge(clock())
    rnd.add(0, "b", clock.advance(0.1))
    assert rnd.should_merge(clock())  # well inside the grace window


def test_quorum_one_without_grace_merges_at_first_contribution():
    rnd = FragmentRound(0, quorum=1, expected={0, 1}, grace=None, now=0.0)
    rnd.add(1, "a", 0.5)
    assert rnd.should_merge(0.5)


def test_synchronous_round_waits_for_every_learner():
    clock = FakeClock()
    rnd = FragmentRound(0, quorum=3, expected={0, 1, 2}, grace=None, now=clock())
    rnd.add(0, "a", clock())
    rnd.add(1, "b", clock.advance(5))
    assert not rnd.should_merge(clock.advance(1000))
    assert rnd.deadline(clock()) is None  # only a contribution can change it
    rnd.add(2, "c", clock.advance(1))
    assert rnd.should_merge(clock())
    assert rnd.quorum_wait_s == pytest.approx(1006)


def test_grace_window_fixed_when_quorum_is_reached():
    g = grace_with()
    rnd = FragmentRound(0, quorum=1, expected={0, 1}, grace=g, now=0.0)
    rnd.add(0, "a", 0.0)
    g.observe_step(100.0)  # later EMA changes do not move an open round's deadline
    assert rnd.deadline(0.0) == pytest.approx(0.85)


def test_second_push_in_a_round_supersedes_the_first():
    rnd = FragmentRound(0, quorum=2, expected={0, 1}, grace=None, now=0.0)
    assert rnd.add(0, "old", 0.0) is None
    assert rnd.add(0, "new", 1.0) == "old"
    assert not rnd.has_quorum  # still one distinct learner
    assert rnd.contributions == {0: "new"}


def test_dropping_a_dead_learner_can_complete_the_round():
    rnd = FragmentRound(0, quorum=3, expected={0, 1, 2}, grace=None, now=0.0)
    rnd.add(0, "a", 1.0)
    rnd.add(1, "b", 2.0)
    assert not rnd.should_merge(10.0)
    rnd.update(10.0, expected={0, 1}, quorum=2)  # elastic: learner 2 timed out
    assert rnd.should_merge(10.0) and rnd.quorum_at == 10.0


def test_round_table_opens_on_demand_orders_ready_and_closes():
    grace = grace_with()  # 0.85 s window
    table: RoundTable[str] = RoundTable(quorum=1, grace=grace, expected=frozenset({0, 1}))
    assert table.next_deadline(0.0) is None and table.ready(0.0) == []
    table.add(5, 0, "a", 1.0)
    table.add(2, 0, "b", 1.2)
    assert table.next_deadline(1.2) == pytest.approx(1.85)
    assert table.ready(1.9) == [5]
    assert table.ready(2.1) == [2, 5]
    table.add(7, 1, "c", 2.0)
    table.set_expected({1}, 2.0)  # learner 0 gone: round 7 has everyone it expects
    assert 7 in table.ready(2.0)
    closed = table.close(5)
    assert closed.fragment == 5 and closed.contributions == {0: "a"}
    assert 5 not in table.rounds
