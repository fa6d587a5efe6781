"""A learner's background pushes: one daemon thread per in-flight push, retried.

At most one push per (learner, fragment) is in flight (the learner skips a due sync
while one is); each runs in its own thread so the inner loop never blocks on the
network in ``decoupled`` mode. An attempt is one RPC (``trainers.client.rpc``) bounded
by ``rpc_timeout_s``; a failed attempt (connect refused, reset, timeout, truncated
reply) is logged as ``retry`` and repeated with the *same* key and payload after a
bounded exponential backoff with full jitter (``backoff_s``), until the push is acked,
refused, or the sender is stopped. A refusal the synchronizer states (PUSH_ACK with
``status: rejected``, or an ERROR reply such as ``auth``) ends the push: retrying the
same bytes cannot help. The result goes to a queue the inner loop drains.
"""
from __future__ import annotations

import dataclasses
import queue
import random
import threading
import time
from typing import Any, Callable

import torch

from trainers import wire
from trainers.client import RpcError, rpc

BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
_FINAL_ERRORS = {"auth", "malformed", "oversized"}  # the synchronizer refused these bytes


def backoff_s(attempt: int, rng: random.Random, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base·2^attempt)]."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 16))))


@dataclasses.dataclass
class PushJob:
    fragment: int
    key: str
    header: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    snapshot: torch.Tensor  # the uncorrupted local fragment that was pushed
    step: int  # inner step at which it was pushed
    range: tuple[int, int]


@dataclasses.dataclass
class PushResult:
    job: PushJob
    status: str  # merged | duplicate | rejected | stopped
    reason: str | None
    version: int | None
    current_version: int | None
    frame: wire.Frame | None


class Sender:
    def __init__(self, addr: tuple[str, int], secret: bytes, timeout_s: float,
                 on_retry: Callable[[str, int, str], None], seed: int) -> None:
        self.addr, self.secret, self.timeout_s = addr, secret, timeout_s
        self.on_retry = on_retry
        self.results: queue.Queue[PushResult] = queue.Queue()
        self.stop_event = threading.Event()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _sleep(self, attempt: int) -> None:
        with self._rng_lock:
            delay = backoff_s(attempt, self._rng)
        self.stop_event.wait(delay)

    def submit(self, job: PushJob) -> None:
        t = threading.Thread(target=self._run, args=(job,), name=f"push-{job.key}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def in_flight(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def _run(self, job: PushJob) -> None:
        attempt = 0
        while not self.stop_event.is_set():
            try:
                frame, _ = rpc(self.addr, wire.MsgType.PUSH, job.header, job.tensors, self.secret,
                               timeout_s=self.timeout_s)
            except RpcError as e:
                if e.reason in _FINAL_ERRORS:
                    self.results.put(PushResult(job, "rejected", e.reason, None, None, None))
                    return
                attempt += 1
                self.on_retry("push", attempt, str(e)[:200])
                self._sleep(attempt)
                continue
            h = frame.header
            self.results.put(PushResult(job, str(h.get("status")), h.get("reason"), h.get("version"),
                                        h.get("current_version"), frame))
            return
        self.results.put(PushResult(job, "stopped", None, None, None, None))

    def join_all(self, timeout_s: float) -> None:
        """Waits (bounded) for in-flight pushes, then tells the rest to stop."""
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads):
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self.stop_event.set()
        for t in list(self._threads):
            t.join(timeout=self.timeout_s + 1)
