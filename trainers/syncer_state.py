"""The synchronizer's state machine: global fragments, rounds, merges, ledger, durability.

No sockets here: ``trainers.syncer`` turns frames into calls on ``SyncerState`` and
replies with what they return, so this logic is tested without a network. One lock
guards everything; a push that joins a round gets a ``Pending`` whose ``done`` event
fires after the round was merged *and made durable* (or after it was rejected), so the
connection handler replies only then (PUSH_ACK = the merge's acknowledgement).

Decisions (SPEC §1 and the issue; the paper is silent on these):

- **Idempotency.** A push carries ``key = f"{learner}-{incarnation}-{fragment}-{seq}"``.
  A key already merged is answered ``duplicate`` with the current fragment and never
  merged again; a key still waiting in its round (a retry after a reset connection)
  waits on the same ``Pending``. Merged keys are part of the durable fragment state, so
  this holds across a synchronizer crash.
- **Data ledger.** ``data_end[p][learner]`` is the end of the last *merged* data range
  of that learner for fragment p (durable with the fragment). A join returns it per
  fragment as ``since`` and ``resume_cursor = min(since)``.
- **Incarnations.** Each join gets a new incarnation (durable in ``meta.json`` before
  the join is answered). The learner's pending contributions from older incarnations
  are dropped (``reject superseded``) and later pushes from them are refused.
- **Checks before a contribution enters a round:** incarnation current (else
  ``superseded``), base version at most ``max_staleness`` behind (``stale``),
  ``merge.check_update`` (``nan``, ``norm``, ``malformed`` shape). The global state is
  untouched by a rejected push.
- **Outer momentum in decoupled mode**: Δ_p is taken against the *current* Θ_p (SPEC
  §1), so with K=1 a learner's delta also holds, negated, the other learners' merges
  since it last applied; momentum 0.9 turns that delayed feedback into divergence on
  ``tiny`` (eval loss 2.8 → 56 in 30 s with 2 learners), hence the config default 0.5.
  (Taking Δ against the learner's base version instead was tried and trained worse.)
- **Durability order:** merge → save fragment (atomic, fsync) → log ``checkpoint`` →
  wake the waiting handlers (they log ``ack``). A crash before the save loses a merge no
  learner was told about; the learners retry those pushes with the same key.
- **Modes.** ``effective_schedule`` gives (P, H): ``ddp`` syncs the whole model every
  step, ``diloco`` the whole model every H steps, ``decoupled`` P staggered fragments.
  ``ddp``/``diloco`` wait for every expected learner without grace; ``ddp`` elastic
  expects only learners heard from within ``elastic_timeout_s``.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

import torch

from trainers.config import Mode, TrainerConfig
from trainers.events import EventLog
from trainers.fragments import FragmentMap
from trainers.merge import Contribution, NesterovOuter, check_update, embedding_ranges, outer_gradient
from trainers.rounds import AdaptiveGrace, RoundTable
from trainers.store import DurableStore, FragmentState


def effective_schedule(cfg: TrainerConfig) -> tuple[int, int]:
    """(fragments requested, sync period H) for the mode: synchronous modes sync the
    whole model at once."""
    if cfg.mode is Mode.DDP:
        return 1, 1
    if cfg.mode is Mode.DILOCO:
        return 1, cfg.sync_every
    return cfg.fragments, cfg.sync_every


def outer_settings(cfg: TrainerConfig) -> tuple[float, float, bool]:
    """(lr, momentum, nesterov): ddp is plain parameter averaging every step."""
    if cfg.mode is Mode.DDP:
        return 1.0, 0.0, False
    return cfg.outer_lr, cfg.outer_momentum, cfg.nesterov


@dataclasses.dataclass
class Pending:
    """One push waiting in a round; ``result`` is set before ``done`` fires."""

    learner: int
    incarnation: int
    fragment: int
    key: str
    base_version: int
    tokens: int
    steps: int
    range: tuple[int, int]
    params: torch.Tensor
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: dict[str, Any] | None = None  # {"status": "merged"|"rejected", "version", "reason"}


@dataclasses.dataclass
class Outcome:
    """What a push handler replies now (``pending`` None) or after ``pending.done``."""

    status: str  # "pending", "duplicate", "rejected"
    reason: str | None = None
    version: int | None = None
    pending: Pending | None = None


class SyncerState:
    def __init__(self, cfg: TrainerConfig, fmap: FragmentMap, initial: list[torch.Tensor],
                 store: DurableStore, log: EventLog, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.fmap, self.store, self.log, self.clock = cfg, fmap, store, log, clock
        self.P, self.H = fmap.P, effective_schedule(cfg)[1]
        lr, momentum, nesterov = outer_settings(cfg)
        self.outer = NesterovOuter(lr, momentum, nesterov)
        self.params = [t.detach().float().clone() for t in initial]
        self.versions = [0] * self.P
        self.data_end: list[dict[int, int]] = [{} for _ in range(self.P)]
        self.merged_keys: list[dict[str, int]] = [{} for _ in range(self.P)]
        self.tokens_merged = [0] * self.P
        self.incarnations: dict[int, int] = {}
        self.last_seen: dict[int, float] = {}
        self.learner_tokens: dict[int, float] = {}  # whole-model tokens merged per learner
        self.outer_updates = 0
        self.restored = False
        # ddp, not elastic: the state at the last checkpoint (every checkpoint_every
        # merges) to roll back to when a learner that died rejoins; learners that must
        # rejoin after a rollback (their model holds voided merges).
        self.rollback_point: dict[str, Any] | None = None
        self.must_rejoin: set[int] = set()
        self.lock = threading.Condition()
        self.grace = AdaptiveGrace(cfg.grace_gamma, cfg.overlap_steps, cfg.grace_cap_steps)
        synchronous = cfg.mode is not Mode.DECOUPLED
        self.rounds: RoundTable[Pending] = RoundTable(
            quorum=cfg.effective_quorum, grace=None if synchronous else self.grace,
            expected=frozenset(range(cfg.learners)))
        self.plain = [embedding_ranges(fmap, p) for p in range(self.P)]
        self._mark_rollback_point()

    # ---- durability ------------------------------------------------------------
    def restore(self) -> bool:
        """Loads ``DIR/state`` if a previous synchronizer left it; logs ``restore``."""
        self.store.discard_partial()
        snap = self.store.load()
        if snap is None:
            return False
        for p, st in snap.fragments.items():
            if p >= self.P or st.params.numel() != self.fmap.numel[p]:
                continue  # a different model's state: ignore rather than load garbage
            self.params[p] = st.params.float()
            self.versions[p] = st.version
            self.data_end[p] = dict(st.data_end)
            self.merged_keys[p] = {k: int(v) for k, v in st.merged_keys.items()}
            self.tokens_merged[p] = st.tokens_merged
            self.outer.set_momentum_buffer(p, st.momentum)
        meta = snap.meta or {}
        self.incarnations = {int(k): int(v) for k, v in meta.get("incarnations", {}).items()}
        self.learner_tokens = {int(k): float(v) for k, v in meta.get("learner_tokens", {}).items()}
        self.outer_updates = sum(self.versions)
        self.restored = True
        self.rollback_point = None
        self._mark_rollback_point()
        self.log.emit("restore", versions=list(self.versions), merges=self.outer_updates)
        return True

    def _save_meta(self) -> None:
        self.store.save_meta({"incarnations": {str(k): v for k, v in self.incarnations.items()},
                              "learner_tokens": {str(k): v for k, v in self.learner_tokens.items()},
                              "config": self.cfg.to_dict()})

    def _save_fragment(self, p: int) -> int:
        return self.store.save_fragment(p, FragmentState(
            params=self.params[p], momentum=self.outer.momentum_buffer(p), version=self.versions[p],
            data_end=dict(self.data_end[p]), merged_keys={k: str(v) for k, v in self.merged_keys[p].items()},
            tokens_merged=self.tokens_merged[p]))

    # ---- operations ------------------------------------------------------------
    def join(self, learner: int, bytes_in: int) -> dict[str, Any]:
        """A (re)joining learner: new incarnation, its resume point, the fragments."""
        with self.lock:
            rejoin_after_death = learner in self.incarnations and learner not in self.must_rejoin
            self.must_rejoin.discard(learner)
            inc = self.incarnations.get(learner, -1) + 1
            self.incarnations[learner] = inc
            if rejoin_after_death and self._rolls_back():
                self._rollback(learner)
            self._save_meta()
            self.last_seen[learner] = self.clock()
            for rnd in list(self.rounds.rounds.values()):
                old = rnd.contributions.get(learner)
                if old is not None:
                    del rnd.contributions[learner]
                    self._reject_pending(old, "superseded")
            since = [self.data_end[p].get(learner, 0) for p in range(self.P)]
            self._update_expected()
            return {"incarnation": inc, "since": since, "resume_cursor": min(since),
                    "versions": list(self.versions), "params": [t.clone() for t in self.params]}

    def heartbeat(self, learner: int, incarnation: int, step_s: float | None) -> None:
        with self.lock:
            if self.incarnations.get(learner) == incarnation:
                self.last_seen[learner] = self.clock()
            if step_s is not None and step_s > 0:
                self.grace.observe_step(float(step_s))
            self._update_expected()
            self.lock.notify_all()

    def push(self, item: Pending) -> Outcome:
        """Checks a push and adds it to its fragment's round (or refuses it)."""
        p = item.fragment
        with self.lock:
            for q in range(self.P):
                if item.key in self.merged_keys[q]:
                    return Outcome("duplicate", version=self.merged_keys[q][item.key])
            rnd = self.rounds.rounds.get(p)
            waiting = rnd.contributions.get(item.learner) if rnd is not None else None
            if waiting is not None and waiting.key == item.key:
                return Outcome("pending", pending=waiting)  # a retry of a push in its round
            if self.incarnations.get(item.learner) != item.incarnation:
                return self._refuse(item, "superseded")
            if item.learner in self.must_rejoin:
                return self._refuse(item, "rolled_back")
            self.last_seen[item.learner] = self.clock()
            if self.versions[p] - item.base_version > self.cfg.max_staleness:
                return self._refuse(item, "stale")
            why = check_update(self.params[p], item.params, self.cfg.max_update_norm_ratio)
            if why is not None:
                return self._refuse(item, why)
            replaced = self.rounds.add(p, item.learner, item, self.clock())
            if replaced is not None and replaced is not item:
                self._reject_pending(replaced, "superseded")
            self.lock.notify_all()
            return Outcome("pending", pending=item)

    def _refuse(self, item: Pending, reason: str) -> Outcome:
        self.log.emit("reject", learner=item.learner, fragment=item.fragment, key=item.key,
                      reason=reason, range=list(item.range), tokens=item.tokens)
        return Outcome("rejected", reason=reason, version=self.versions[item.fragment])

    def _reject_pending(self, item: Pending, reason: str) -> None:
        self.log.emit("reject", learner=item.learner, fragment=item.fragment, key=item.key,
                      reason=reason, range=list(item.range), tokens=item.tokens)
        item.result = {"status": "rejected", "reason": reason, "version": self.versions[item.fragment]}
        item.done.set()

    # ---- ddp, not elastic: roll back to the last checkpoint --------------------------
    def _rolls_back(self) -> bool:
        return self.cfg.mode is Mode.DDP and not self.cfg.elastic

    def _mark_rollback_point(self) -> None:
        """Every ``checkpoint_every`` merges (and at version 0) remember the state. Kept
        in memory: the durable per-merge state is a superset, so a synchronizer crash
        restores at least this far."""
        if self._rolls_back() and (self.rollback_point is None or self.outer_updates % self.cfg.checkpoint_every == 0):
            self.rollback_point = {
                "params": [t.clone() for t in self.params], "versions": list(self.versions),
                "data_end": [dict(d) for d in self.data_end], "merged_keys": [dict(k) for k in self.merged_keys],
                "tokens_merged": list(self.tokens_merged), "outer_updates": self.outer_updates,
                "momentum": [self.outer.momentum_buffer(p) for p in range(self.P)]}

    def _rollback(self, learner: int) -> None:
        """A learner died and is back: the synchronous job resumes from the checkpoint.
        Every other learner's model holds the voided merges, so it must rejoin."""
        point = self.rollback_point
        if point is None:
            return
        voided = [{"fragment": p, "version": v} for p in range(self.P)
                  for v in range(point["versions"][p] + 1, self.versions[p] + 1)]
        for rnd in list(self.rounds.rounds.values()):
            for item in list(rnd.contributions.values()):
                self._reject_pending(item, "rolled_back")
        self.rounds.rounds.clear()
        self.params = [t.clone() for t in point["params"]]
        self.versions = list(point["versions"])
        self.data_end = [dict(d) for d in point["data_end"]]
        self.merged_keys = [dict(k) for k in point["merged_keys"]]
        self.tokens_merged = list(point["tokens_merged"])
        self.outer_updates = point["outer_updates"]
        for p, buf in enumerate(point["momentum"]):
            self.outer.set_momentum_buffer(p, buf)
        for p in range(self.P):
            self._save_fragment(p)
        self.must_rejoin = set(self.incarnations) - {learner}
        self.log.emit("rollback", to_versions=list(self.versions), voided=voided, learner=learner)

    def _update_expected(self) -> None:
        """Elastic ddp: expect only learners heard from recently (K = those)."""
        if self.cfg.mode is Mode.DDP and self.cfg.elastic:
            now = self.clock()
            alive = {m for m, t in self.last_seen.items() if now - t <= self.cfg.elastic_timeout_s}
            alive = alive or set(range(self.cfg.learners))
            self.rounds.set_expected(alive, now, quorum=len(alive))

    # ---- merging ---------------------------------------------------------------
    def next_deadline(self) -> float | None:
        with self.lock:
            self._update_expected()
            return self.rounds.next_deadline(self.clock())

    def merge_ready(self) -> list[int]:
        """Merges every round that is due; returns the fragments merged."""
        merged = []
        with self.lock:
            self._update_expected()
            for p in self.rounds.ready(self.clock()):
                self._merge(p)
                merged.append(p)
        return merged

    def _merge(self, p: int) -> None:
        t0 = self.clock()
        rnd = self.rounds.close(p)
        items = sorted(rnd.contributions.values(), key=lambda it: it.learner)
        contribs = [Contribution(it.learner, it.params, it.tokens, it.steps) for it in items]
        delta = outer_gradient(self.params[p], contribs, self.cfg.merge, plain_ranges=self.plain[p])
        new = self.outer.step(p, self.params[p], delta)
        update_norm = float((new - self.params[p]).norm())
        self.params[p] = new
        self.versions[p] += 1
        version = self.versions[p]
        self.outer_updates += 1
        tokens = sum(it.tokens for it in items)
        self.tokens_merged[p] += tokens
        weights = [c.tokens * (c.tokens / c.steps) if c.steps > 0 else 0.0 for c in contribs]
        total_w = sum(weights) or 1.0
        for it in items:
            self.merged_keys[p][it.key] = version
            self.data_end[p][it.learner] = max(self.data_end[p].get(it.learner, 0), it.range[1])
            self.learner_tokens[it.learner] = self.learner_tokens.get(it.learner, 0) + it.tokens * self.fmap.fraction(p)
        self.log.emit("merge", fragment=p, version=version, fraction=self.fmap.fraction(p),
                      contributors=[{"learner": it.learner, "incarnation": it.incarnation, "key": it.key,
                                     "tokens": it.tokens, "steps": it.steps, "range": list(it.range),
                                     "base_version": it.base_version, "weight": w / total_w}
                                    for it, w in zip(items, weights)],
                      tokens=tokens, quorum_wait_s=rnd.quorum_wait_s or 0.0, grace_s=rnd.grace_s,
                      update_norm=update_norm)
        nbytes = self._save_fragment(p)
        self.log.emit("checkpoint", fragment=p, version=version, bytes=nbytes)
        if rnd.quorum_wait_s is not None:
            self.grace.observe_quorum(rnd.quorum_wait_s)
        self.grace.observe_sync(self.clock() - t0)
        self._mark_rollback_point()
        for it in items:
            it.result = {"status": "merged", "version": version}
            it.done.set()

    def fragment(self, p: int) -> tuple[torch.Tensor, int]:
        with self.lock:
            return self.params[p].clone(), self.versions[p]

    def _model_tokens(self) -> int:
        """Tokens merged, as whole-model tokens (fragment p's count times its fraction)."""
        return round(sum(t * self.fmap.fraction(p) for p, t in enumerate(self.tokens_merged)))

    def snapshot(self) -> tuple[list[torch.Tensor], list[int], int]:
        with self.lock:
            return [t.clone() for t in self.params], list(self.versions), self._model_tokens()

    def status(self) -> dict[str, Any]:
        with self.lock:
            now = self.clock()
            return {"versions": list(self.versions), "outer_updates": self.outer_updates,
                    "tokens_merged": self._model_tokens(),
                    "grace": self.grace.snapshot(),
                    "learners": {str(m): {"incarnation": inc,
                                          "last_seen_s_ago": (now - self.last_seen[m]) if m in self.last_seen else None,
                                          "tokens_merged": round(self.learner_tokens.get(m, 0))}
                                 for m, inc in sorted(self.incarnations.items())}}

    def fail_all_pending(self, reason: str) -> None:
        """At shutdown: wake every waiting handler (nothing was merged for them)."""
        with self.lock:
            for rnd in self.rounds.rounds.values():
                for it in rnd.contributions.values():
                    if not it.done.is_set():
                        it.result = {"status": "unavailable", "reason": reason}
                        it.done.set()
