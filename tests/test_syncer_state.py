"""SyncerState without a network: merge arithmetic with exact values, quorum and grace
window on a controllable clock, refusals that leave the state unchanged, idempotency,
and durability of a merge before it is acknowledged."""
from __future__ import annotations

import torch

from trainers.config import TrainerConfig
from trainers.events import EventLog, read_events
from trainers.fragments import FragmentMap
from trainers.store import DurableStore
from trainers.syncer_state import Pending, SyncerState


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _fmap() -> FragmentMap:
    return FragmentMap(names=(("blocks.0.w",),), shapes=((torch.Size([3]),),), numel=(3,))


def _state(tmp_path, clock=None, **cfg) -> SyncerState:
    base = dict(learners=2, quorum=2, outer_lr=0.5, outer_momentum=0.0, fragments=1,
                max_update_norm_ratio=100.0)
    base.update(cfg)
    st = SyncerState(TrainerConfig(**base), _fmap(), [torch.tensor([1.0, 2.0, 3.0])],
                     DurableStore(tmp_path), EventLog(tmp_path / "events.jsonl", "syncer"),
                     clock=clock or Clock())
    for m in range(base["learners"]):
        st.join(m, 0)
    return st


def _push(m, values, *, tokens=100, steps=1, key=None, base=0, rng=(0, 100), inc=0):
    return Pending(learner=m, incarnation=inc, fragment=0, key=key or f"{m}-{inc}-0-0", base_version=base,
                   tokens=tokens, steps=steps, range=rng, params=torch.tensor(values))


def test_merge_is_token_weighted_outer_sgd_with_exact_values(tmp_path):
    st = _state(tmp_path)
    # w0 = 100*100/1 = 10000, w1 = 100*100/4 = 2500 -> normalised 0.8, 0.2
    a = st.push(_push(0, [0.0, 0.0, 0.0], steps=1))
    b = st.push(_push(1, [3.0, 2.0, 1.0], steps=4, rng=(0, 100)))
    assert st.merge_ready() == [0]
    # delta = 0.8*[1,2,3] + 0.2*[-2,0,2] = [0.4,1.6,2.8]; new = theta - 0.5*delta
    assert torch.allclose(st.params[0], torch.tensor([0.8, 1.2, 1.6]), atol=1e-6)
    assert st.versions == [1]
    assert a.pending.result == {"status": "merged", "version": 1} == b.pending.result
    merge = [e for e in read_events(tmp_path / "events.jsonl") if e["ev"] == "merge"][0]
    assert [round(c["weight"], 6) for c in merge["contributors"]] == [0.8, 0.2]
    assert merge["tokens"] == 200


def test_nesterov_momentum_across_two_merges(tmp_path):
    st = _state(tmp_path, quorum=1, learners=1, outer_lr=1.0, outer_momentum=0.5)
    st.push(_push(0, [0.0, 1.0, 2.0]))  # delta [1,1,1]; buf=[1,1,1]; update = 1 + .5*1 = 1.5
    st.merge_ready()
    assert torch.allclose(st.params[0], torch.tensor([-0.5, 0.5, 1.5]))
    st.push(_push(0, [-1.5, -0.5, 0.5], key="0-0-0-1", base=1, rng=(100, 200)))  # delta [1,1,1]
    st.merge_ready()  # buf = .5*1 + 1 = 1.5; update = 1 + .5*1.5 = 1.75
    assert torch.allclose(st.params[0], torch.tensor([-2.25, -1.25, -0.25]))


def test_quorum_then_grace_window_on_a_controllable_clock(tmp_path):
    clock = Clock()
    st = _state(tmp_path, clock=clock, quorum=1, overlap_steps=2, grace_gamma=0.5, grace_cap_steps=1.0)
    st.heartbeat(0, 0, step_s=1.0)  # grace = 0.5 * (2*1.0 - 0 - 0) = 1.0, cap 1 step = 1.0
    st.push(_push(0, [1.0, 2.0, 2.0]))
    clock.t += 0.99
    assert st.merge_ready() == [], "merged before the grace window ended"
    assert st.next_deadline() == 101.0
    clock.t += 0.02
    assert st.merge_ready() == [0]
    # Everyone in before the window ends: merge at once.
    st.push(_push(0, [1.0, 2.0, 2.0], key="0-0-0-1", base=1, rng=(100, 200)))
    st.push(_push(1, [1.0, 2.0, 2.0], key="1-0-0-0", base=1))
    assert st.merge_ready() == [0]
    assert st.versions == [2]


def test_without_quorum_nothing_merges(tmp_path):
    clock = Clock()
    st = _state(tmp_path, clock=clock, quorum=2)
    st.push(_push(0, [1.0, 2.0, 2.0]))
    clock.t += 1000
    assert st.merge_ready() == [] and st.versions == [0]


def test_nan_and_norm_pushes_are_rejected_and_state_unchanged(tmp_path):
    st = _state(tmp_path, quorum=1, max_update_norm_ratio=2.0)
    before = st.params[0].clone()
    nan = st.push(_push(0, [float("nan"), 2.0, 3.0]))
    huge = st.push(_push(1, [1e6, 2.0, 3.0]))
    assert (nan.status, nan.reason) == ("rejected", "nan")
    assert (huge.status, huge.reason) == ("rejected", "norm")
    assert st.merge_ready() == []
    assert torch.equal(st.params[0], before) and st.versions == [0]
    rejects = [e["reason"] for e in read_events(tmp_path / "events.jsonl") if e["ev"] == "reject"]
    assert rejects == ["nan", "norm"]


def test_stale_push_is_rejected(tmp_path):
    st = _state(tmp_path, quorum=1, learners=1, max_staleness=1)
    for i in range(3):
        st.push(_push(0, [1.0, 2.0, 2.5], key=f"0-0-0-{i}", base=i, rng=(i * 100, i * 100 + 100)))
        st.merge_ready()
    out = st.push(_push(0, [1.0, 2.0, 2.5], key="0-0-0-9", base=1, rng=(300, 400)))
    assert (out.status, out.reason) == ("rejected", "stale")


def test_retried_key_is_merged_once(tmp_path):
    st = _state(tmp_path, quorum=1)
    first = st.push(_push(0, [1.0, 2.0, 2.0]))
    again = st.push(_push(0, [1.0, 2.0, 2.0]))  # retry while its round is open
    assert again.pending is first.pending
    st.merge_ready()
    late = st.push(_push(0, [1.0, 2.0, 2.0]))  # retry after the merge
    assert (late.status, late.version) == ("duplicate", 1)
    assert st.merge_ready() == [] and st.versions == [0 + 1]


def test_rejoin_supersedes_pending_and_refuses_old_incarnation(tmp_path):
    st = _state(tmp_path, quorum=2)
    old = st.push(_push(0, [1.0, 2.0, 2.0]))
    j = st.join(0, 0)
    assert j["incarnation"] == 1 and j["resume_cursor"] == 0
    assert old.pending.result["status"] == "rejected" and old.pending.result["reason"] == "superseded"
    out = st.push(_push(0, [1.0, 2.0, 2.0], key="0-0-0-1"))
    assert (out.status, out.reason) == ("rejected", "superseded")


def test_merge_is_durable_before_ack_and_restores(tmp_path):
    st = _state(tmp_path, quorum=1)
    item = st.push(_push(0, [0.0, 2.0, 3.0], rng=(0, 512)))
    st.merge_ready()
    assert item.pending.done.is_set()
    events = read_events(tmp_path / "events.jsonl")
    assert [e["ev"] for e in events if e["ev"] in ("merge", "checkpoint")] == ["merge", "checkpoint"]
    st2 = SyncerState(st.cfg, _fmap(), [torch.zeros(3)], DurableStore(tmp_path),
                      EventLog(tmp_path / "events.jsonl", "syncer"), clock=Clock())
    assert st2.restore()
    assert st2.versions == [1] and torch.equal(st2.params[0], st.params[0])
    assert st2.join(0, 0)["since"] == [512]
    assert st2.push(_push(0, [0.0, 2.0, 3.0], rng=(0, 512))).status == "duplicate"
