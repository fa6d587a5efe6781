"""Builders of synthetic run histories (events.jsonl + journal.jsonl records) for tests.

A ``History`` appends records in the shapes of docs/CONTRACTS.md with times given as
offsets from a fixed origin, so tests of measurements, checks and reports can state
exact expected figures. ``clean_history()`` is a small, fully consistent decoupled run
(every invariant holds) that tests mutate to make one invariant fail at a time.
"""
from __future__ import annotations

from typing import Any, Iterable

ORIGIN = 1_700_000_000.0  # a fixed Unix time: offsets below are seconds after it


class History:
    def __init__(self, origin: float = ORIGIN) -> None:
        self.origin = origin
        self.events: list[dict[str, Any]] = []
        self.journal: list[dict[str, Any]] = []

    # --- raw ---------------------------------------------------------------------
    def ev(self, at: float, src: str, ev: str, **fields: Any) -> dict[str, Any]:
        record = {"t": self.origin + at, "src": src, "ev": ev, **fields}
        self.events.append(record)
        return record

    def jr(self, at: float, kind: str, **fields: Any) -> dict[str, Any]:
        record = {"t": self.origin + at, "kind": kind, **fields}
        self.journal.append(record)
        return record

    # --- journal -----------------------------------------------------------------
    def ready(self, at: float, learners: int) -> None:
        self.jr(at, "ready", learners=learners)

    def run_end(self, at: float, status: str = "completed") -> None:
        self.jr(at, "run_end", status=status, reason="test")

    def teardown(self, at: float, leftovers: Iterable[str] = ()) -> None:
        self.jr(at, "teardown", leftovers=list(leftovers))

    def node_state(self, at: float, node: str, state: str, cpu_share: float | None = None) -> None:
        if cpu_share is None:
            cpu_share = 0.0 if state in ("down", "paused") else 1.0
        self.jr(at, "node_state", node=node, state=state, cpu_share=cpu_share)

    def node_start(self, at: float, node: str, reason: str = "initial") -> None:
        self.jr(at, "node_start", node=node, pid=4242, reason=reason)

    def fault(self, inject_at: float, heal_at: float | None, fault_id: str, kind: str,
              target: str, **params: Any) -> None:
        self.jr(inject_at, "fault_inject", fault_id=fault_id, fault=kind, target=target,
                params=params, planned_s=inject_at)
        if heal_at is not None:
            self.jr(heal_at, "fault_heal", fault_id=fault_id, fault=kind, target=target)

    # --- synchronizer events -------------------------------------------------------
    def syncer_start(self, at: float, versions: list[int], restored: bool = False) -> None:
        self.ev(at, "syncer", "syncer_start", pid=1, restored=restored, versions=list(versions),
                fragment_numel=[10] * len(versions), total_numel=10 * len(versions))

    def join(self, at: float, learner: int, incarnation: int = 0, *, bytes_in: int = 0,
             bytes_out: int = 0, versions: list[int] | None = None) -> None:
        self.ev(at, "syncer", "join", learner=learner, incarnation=incarnation, resume_cursor=0,
                since=[], versions=versions or [], bytes_in=bytes_in, bytes_out=bytes_out)

    def push(self, at: float, learner: int, fragment: int, key: str, rng: tuple[int, int], *,
             incarnation: int = 0, tokens: int | None = None, bytes_in: int = 0) -> None:
        self.ev(at, "syncer", "push", learner=learner, incarnation=incarnation, fragment=fragment,
                key=key, base_version=0, tokens=rng[1] - rng[0] if tokens is None else tokens,
                steps=1, range=list(rng), bytes_in=bytes_in)

    def merge(self, at: float, fragment: int, version: int, contributors: list[dict[str, Any]],
              *, fraction: float = 0.5, update_norm: float = 1.0) -> dict[str, Any]:
        return self.ev(at, "syncer", "merge", fragment=fragment, version=version, fraction=fraction,
                       contributors=contributors, tokens=sum(c["tokens"] for c in contributors),
                       quorum_wait_s=0.0, grace_s=0.0, update_norm=update_norm)

    def ack(self, at: float, learner: int, fragment: int, key: str, version: int, bytes_out: int = 0) -> None:
        self.ev(at, "syncer", "ack", learner=learner, fragment=fragment, key=key, version=version,
                bytes_out=bytes_out)

    def reject(self, at: float, learner: int | None, fragment: int | None, key: str | None,
               reason: str, rng: tuple[int, int] | None = None, tokens: int = 0) -> None:
        self.ev(at, "syncer", "reject", learner=learner, fragment=fragment, key=key, reason=reason,
                range=list(rng) if rng else None, tokens=tokens)

    def rollback(self, at: float, to_versions: list[int], voided: list[tuple[int, int]]) -> None:
        self.ev(at, "syncer", "rollback", to_versions=list(to_versions),
                voided=[{"fragment": f, "version": v} for f, v in voided])

    def eval(self, at: float, loss: float) -> None:
        self.ev(at, "syncer", "eval", loss=loss, tokens_merged=0, versions=[])

    # --- learner events ----------------------------------------------------------
    def learner_start(self, at: float, learner: int) -> None:
        self.ev(at, f"learner-{learner}", "learner_start", learner=learner, pid=100 + learner)

    def first_step(self, at: float, learner: int, incarnation: int = 0) -> None:
        self.ev(at, f"learner-{learner}", "first_step", learner=learner, incarnation=incarnation)

    def progress(self, at: float, learner: int, tokens: int, compute_s: float, wall_s: float = 1.0,
                 incarnation: int = 0) -> None:
        self.ev(at, f"learner-{learner}", "progress", learner=learner, incarnation=incarnation,
                step=0, cursor=0, tokens=tokens, compute_s=compute_s, wall_s=wall_s, loss=3.0)

    def apply(self, at: float, learner: int, fragment: int, version: int) -> None:
        self.ev(at, f"learner-{learner}", "apply", learner=learner, fragment=fragment,
                version=version, lag_steps=0)

    def discard(self, at: float, learner: int, fragment: int, rng: tuple[int, int]) -> None:
        self.ev(at, f"learner-{learner}", "discard", learner=learner, fragment=fragment,
                range=list(rng), reason="rejected")

    def corrupt(self, at: float, learner: int, fragment: int, kind: str = "nan") -> None:
        self.ev(at, f"learner-{learner}", "corrupt", learner=learner, fragment=fragment, kind=kind)


def contributor(learner: int, key: str, rng: tuple[int, int], *, incarnation: int = 0,
                tokens: int | None = None) -> dict[str, Any]:
    return {"learner": learner, "incarnation": incarnation, "key": key,
            "tokens": rng[1] - rng[0] if tokens is None else tokens, "steps": 1,
            "range": list(rng), "base_version": 0, "weight": 1.0}


def clean_history(rounds: int = 3, learners: int = 2, fragments: int = 2, tokens: int = 100) -> History:
    """A consistent decoupled run: every learner joins, then each round every fragment
    merges one push of every learner (contiguous ranges), acks it and is applied.
    Every SPEC §3 invariant holds; the journal ends with a clean teardown."""
    h = History()
    h.syncer_start(0.0, [0] * fragments)
    for i in range(learners):
        h.node_start(0.0, f"learner-{i}")
        h.learner_start(0.5, i)
        h.join(1.0, i, bytes_in=10, bytes_out=100)
        h.first_step(1.5, i)
    h.ready(2.0, learners)
    at = 2.0
    for r in range(rounds):
        for f in range(fragments):
            at += 1.0
            contributors = []
            for i in range(learners):
                key = f"L{i}-F{f}-R{r}"
                rng = (r * tokens, (r + 1) * tokens)
                h.push(at - 0.5, i, f, key, rng, bytes_in=50)
                contributors.append(contributor(i, key, rng))
            h.merge(at, f, r + 1, contributors, fraction=1.0 / fragments)
            for c in contributors:
                h.ack(at + 0.1, c["learner"], f, c["key"], r + 1, bytes_out=50)
                h.apply(at + 0.2, c["learner"], f, r + 1)
        for i in range(learners):  # one round of inner steps: `tokens` tokens in `fragments` s
            h.progress(at, i, tokens, compute_s=0.8 * fragments, wall_s=float(fragments))
        h.eval(at + 0.3, 5.0 - r)
    h.run_end(at + 1.0)
    h.teardown(at + 2.0)
    return h
